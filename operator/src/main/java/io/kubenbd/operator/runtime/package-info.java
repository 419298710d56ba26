/**
 * The running operator: java-operator-sdk with the NbdExport reconciler, leader election on a
 * Lease, Prometheus metrics, and the HTTP endpoint for health probes and scraping. Used by the
 * command line and, in-process, by the tests.
 */
package io.kubenbd.operator.runtime;
