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
