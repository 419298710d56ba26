package io.kubenbd.node.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.IOException;

/** Entry point of {@code java -jar nbd-node.jar}. */
@Command(name = "nbd-node", mixinStandardHelpOptions = true, usageHelpAutoWidth = true, version = "nbd-node 0.1.0",
        description = "kube-nbd data plane: serves and inspects NBD exports.",
        subcommands = {ServeCommand.class, ListCommand.class, CtlCommand.class, ImageCommand.class, CsiCommand.class,
                CommandLine.HelpCommand.class})
public final class NbdNodeCommand implements Runnable {
    /** Exit code for arguments or configuration that make no sense (picocli uses 2 for usage errors too). */
    static final int EXIT_BAD_ARGUMENTS = 2;
    /** Exit code for an environment problem: a missing image, a port in use, a refused connection. */
    static final int EXIT_IO_ERROR = 1;

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    static CommandLine commandLine() {
        return new CommandLine(new NbdNodeCommand()).setExecutionExceptionHandler(NbdNodeCommand::failure);
    }

    /**
     * An operator reads one line that says what is wrong, not a stack trace; anything other
     * than bad arguments or I/O is a bug and keeps its trace.
     */
    private static int failure(Exception e, CommandLine command, CommandLine.ParseResult parsed) throws Exception {
        return switch (e) {
            case IllegalArgumentException bad -> {
                command.getErr().println("nbd-node: " + bad.getMessage());
                yield EXIT_BAD_ARGUMENTS;
            }
            case IOException io -> {
                command.getErr().println("nbd-node: " + io.getMessage());
                yield EXIT_IO_ERROR;
            }
            default -> throw e;
        };
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
