/** Tests of the Helm chart and the Dockerfile against helm and a real API server. */
package io.kubenbd.operator.chart;
