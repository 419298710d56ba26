/**
 * Mutual TLS for the NBD servers' control API: the operator's own CA (kept in a Secret of the
 * operator's namespace, made once and renewed before it expires), the server certificates it
 * issues into each export's control TLS Secret, and the client certificate the operator calls the
 * servers with, which it holds in memory only. Key material never leaves these classes in a form
 * that is logged.
 */
package io.kubenbd.operator.controltls;
