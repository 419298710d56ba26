/**
 * The {@code nbd-node} command line (picocli): {@code serve} runs an NBD server,
 * {@code list} shows what a server offers using the project's own client. Export
 * definitions from {@code --export} and from a YAML {@code --config} go through one parser.
 */
package io.kubenbd.node.cli;
