{{- define "campfire.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "campfire.labels" -}}
app.kubernetes.io/name: campfire
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "campfire.siteSelector" -}}
app.kubernetes.io/name: campfire
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: site
{{- end }}

{{- /* Non-root, read-only, no privileges: the restricted Pod Security level. */}}
{{- define "campfire.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "campfire.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}
