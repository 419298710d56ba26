package io.kubenbd.node.cli;

public final class NbdNodeCommand {
    public static void main(String[] args) {}
}
