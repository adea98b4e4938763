{{/*
The chart name, for resource names: "gitquorum" unless nameOverride says otherwise.
*/}}
{{- define "gitquorum.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource: <release>-gitquorum, truncated to 63 characters (DNS names),
or just the release name when it already contains the chart name. Also the operator's Lease.
*/}}
{{- define "gitquorum.fullname" -}}
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

{{/*
chart-version, for the helm.sh/chart label.
*/}}
{{- define "gitquorum.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that select the operator Pods. Never change them: a Deployment's selector is
immutable.
*/}}
{{- define "gitquorum.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitquorum.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource of the chart but the helm test's.
*/}}
{{- define "gitquorum.labels" -}}
helm.sh/chart: {{ include "gitquorum.chart" . }}
{{ include "gitquorum.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitquorum
{{- end }}

{{/*
Labels of the helm test's resources: never the operator's selector labels, or the
Deployment's ReplicaSet would adopt the test Pod and the metrics Service would select it.
*/}}
{{- define "gitquorum.testLabels" -}}
helm.sh/chart: {{ include "gitquorum.chart" . }}
app.kubernetes.io/name: {{ include "gitquorum.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitquorum
app.kubernetes.io/component: test
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "gitquorum.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitquorum.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image of the operator and of the replicas it creates.
*/}}
{{- define "gitquorum.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The metrics Service, which the helm test reaches.
*/}}
{{- define "gitquorum.metricsService" -}}
{{- printf "%s-metrics" (include "gitquorum.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels every replica Pod carries whatever its repository (gitquorum.kube.names.labels):
the PodMonitor selects on them.
*/}}
{{- define "gitquorum.replicaLabels" -}}
app.kubernetes.io/managed-by: gitquorum-operator
app.kubernetes.io/component: replica
{{- end }}
