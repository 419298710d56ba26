/**
 * Reconciles an {@link io.kubenbd.operator.model.NbdExport} into a running NBD server. The
 * reconciler reads as a list of named steps: check the Secret and the PVC, then reconcile one
 * dependent resource class per owned object (PSK Secret, server StatefulSet, Service,
 * PersistentVolume), then read what the server pod reports, bring its dirty bitmaps in line
 * through the server's control API, and write status, conditions and Events.
 */
package io.kubenbd.operator.reconciler;
