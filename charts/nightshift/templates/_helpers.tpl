{{/* Chart name, overridable. */}}
{{- define "nightshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name if it already contains the chart name. */}}
{{- define "nightshift.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nightshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Recommended labels (app.kubernetes.io/*) without a component. */}}
{{- define "nightshift.commonLabels" -}}
helm.sh/chart: {{ include "nightshift.chart" . }}
{{ include "nightshift.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nightshift
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "nightshift.labels" -}}
{{ include "nightshift.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "nightshift.instanceLabels" -}}
app.kubernetes.io/name: {{ include "nightshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator pod. */}}
{{- define "nightshift.selectorLabels" -}}
{{ include "nightshift.instanceLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "nightshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nightshift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "nightshift.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "nightshift.jobsImage" -}}
{{- default (include "nightshift.image" .) .Values.jobs.image }}
{{- end }}

{{/* {"critical": "<name>", "high": ..., "medium": ..., "low": ...} for NIGHTSHIFT_PRIORITY_CLASSES. */}}
{{- define "nightshift.priorityClassesJson" -}}
{{- $pc := .Values.priorityClasses }}
{{- dict "critical" $pc.critical.name "high" $pc.high.name "medium" $pc.medium.name "low" $pc.low.name | toJson }}
{{- end }}

{{- define "nightshift.command" -}}
{{- $cmd := .Values.operator.command }}
{{- if not $cmd }}
{{- $cmd = list "python" "-m" "nightshift" }}
{{- end }}
{{- concat $cmd .Values.operator.extraArgs | toYaml }}
{{- end }}
