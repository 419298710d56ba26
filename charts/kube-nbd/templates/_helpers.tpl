{{/* The chart's name: app.kubernetes.io/name of every object. */}}
{{- define "kube-nbd.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: the release name, shortened so that "<fullname>-csi-node-xxxxx" fits a DNS label. */}}
{{- define "kube-nbd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of the release. */}}
{{- define "kube-nbd.labels" -}}
app.kubernetes.io/name: {{ include "kube-nbd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Selector labels of one component (operator, csi-node): called with (dict "root" $ "component" NAME). */}}
{{- define "kube-nbd.selector" -}}
app.kubernetes.io/name: {{ include "kube-nbd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image, tag defaulting to the chart's appVersion. */}}
{{- define "kube-nbd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's ServiceAccount, which the RBAC binds. */}}
{{- define "kube-nbd.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "kube-nbd.fullname" .) -}}
{{- end -}}

{{/*
The operator's rules on namespaced objects: in the ClusterRole when it watches all namespaces, else in a Role in
each of operator.watchNamespaces.
*/}}
{{- define "kube-nbd.operatorNamespacedRules" -}}
# The custom resource, its status and the finalizer that removes the PersistentVolume.
- apiGroups: [kubenbd.io]
  resources: [nbdexports]
  verbs: [get, list, watch, patch, update]
- apiGroups: [kubenbd.io]
  resources: [nbdexports/status, nbdexports/finalizers]
  verbs: [get, patch, update]
# The generated PSK Secret (created once), and user-named TLS Secrets (read).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# The server workload and its Service (server-side apply).
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, update, delete]
# The PVC an export serves, and pods: the server pod's state, and other pods that use the PVC.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
Whether the operator fences the servers' control port itself, with one NetworkPolicy per export: when
policies are on but the chart knows no namespace to put its own in (all namespaces watched, none listed).
*/}}
{{- define "kube-nbd.operatorMakesControlPolicies" -}}
{{- if and .Values.networkPolicy.enabled (not (.Values.networkPolicy.exportNamespaces | default .Values.operator.watchNamespaces)) -}}
true
{{- end -}}
{{- end -}}
