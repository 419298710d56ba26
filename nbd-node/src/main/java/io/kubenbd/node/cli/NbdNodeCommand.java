package io.kubenbd.node.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of {@code java -jar nbd-node.jar}. */
@Command(name = "nbd-node", mixinStandardHelpOptions = true, version = "nbd-node 0.1.0",
        description = "kube-nbd data plane: serves and inspects NBD exports.",
        subcommands = {ServeCommand.class, ListCommand.class, CommandLine.HelpCommand.class})
public final class NbdNodeCommand implements Runnable {

    public static void main(String[] args) {
        System.exit(new CommandLine(new NbdNodeCommand()).execute(args));
    }

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }
}
