/**
 * TLS material and policy shared by the server and the client: pre-shared keys in the
 * {@code identity:hexkey} file format of GnuTLS' psktool and qemu's tls-creds-psk, X.509
 * certificate/key/CA file sets (also both halves of the control API's mutual TLS), files that
 * are re-read when they change (a Kubernetes Secret volume update), and the Bouncy Castle TLS
 * endpoints for PSK, which the JDK does not offer. Key bytes never leave these classes in a
 * form that could be logged.
 */
package io.kubenbd.node.tls;
