/**
 * The {@code NbdExport} custom resource ({@code kubenbd.io/v1alpha1}) as Java types. The CRD in
 * {@code crds/} is generated from these classes by fabric8's crd-generator, so the schema's
 * validation (enums, patterns, ranges, defaults and CEL rules) is written here, beside the field
 * it guards. Rules the schema cannot express are checked by the reconciler and reported in status.
 */
package io.kubenbd.operator.model;
