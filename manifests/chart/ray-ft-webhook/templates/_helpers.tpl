{{/* The chart's name, `nameOverride` when set. */}}
{{- define "ray-ft-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The objects' name: fullnameOverride, else the release name when it contains the chart's name, else both. */}}
{{- define "ray-ft-webhook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: the kustomize base's two, then Helm's own. */}}
{{- define "ray-ft-webhook.labels" -}}
app.kubernetes.io/name: {{ include "ray-ft-webhook.name" . }}
app.kubernetes.io/part-of: ray-ft-webhook
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The webhook pods' labels: the selector of the Deployment, Service, PDB and NetworkPolicy. */}}
{{- define "ray-ft-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ray-ft-webhook.name" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "ray-ft-webhook.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ray-ft-webhook.tlsSecret" -}}
{{ include "ray-ft-webhook.fullname" . }}-tls
{{- end -}}

{{- define "ray-ft-webhook.priorityClassName" -}}
{{- if .Values.priorityClass.name -}}
{{ .Values.priorityClass.name }}
{{- else if .Values.priorityClass.create -}}
{{ include "ray-ft-webhook.fullname" . }}-critical
{{- end -}}
{{- end -}}

{{/* The Service's DNS name, for the certificate and the ServiceMonitor. */}}
{{- define "ray-ft-webhook.serviceHost" -}}
{{ include "ray-ft-webhook.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end -}}

{{/* The namespaceSelector of every webhook: never the excluded namespaces nor the release's own. */}}
{{- define "ray-ft-webhook.namespaceSelector" -}}
{{- $excluded := concat .Values.webhooks.excludeNamespaces (list .Release.Namespace) | uniq -}}
{{- with .Values.webhooks.namespaceSelector.matchLabels }}
matchLabels:
  {{- toYaml . | nindent 2 }}
{{- end }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ toJson $excluded }}
  {{- with .Values.webhooks.namespaceSelector.matchExpressions }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* clientConfig of one webhook: the Service and its path, or (tests only) testOnlyURL + the path. */}}
{{- define "ray-ft-webhook.clientConfig" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
clientConfig:
  {{- if $root.Values.webhooks.testOnlyURL }}
  url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhooks.testOnlyURL) $path | quote }}
  {{- else }}
  service:
    name: {{ include "ray-ft-webhook.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ $path }}
    port: 443
  {{- end }}
  {{- with $root.Values.webhooks.testOnlyCABundle }}
  caBundle: {{ . | quote }}
  {{- end }}
{{- end -}}

{{/* The annotation cert-manager's CA injector reads (cert-manager mode). */}}
{{- define "ray-ft-webhook.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "ray-ft-webhook.fullname" . }}-serving
{{- end }}
{{- end -}}
