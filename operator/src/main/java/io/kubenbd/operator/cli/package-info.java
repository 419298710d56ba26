/** The {@code kube-nbd-operator} command line (picocli): options, then run until SIGTERM. */
package io.kubenbd.operator.cli;
