{{/* image reference: repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "spire.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}

{{- define "spire.labels" -}}
app.kubernetes.io/part-of: hpcs-stack
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The restricted-profile container securityContext every SPIRE container runs with. */}}
{{- define "spire.securityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.global.spireUid }}
runAsGroup: {{ .Values.global.spireGid }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "spire.psatServiceAccounts" -}}
{{- if .Values.server.psatServiceAccounts -}}
{{ .Values.server.psatServiceAccounts | toJson }}
{{- else -}}
{{ list (printf "%s:hpcs-server" .Release.Namespace) | toJson }}
{{- end -}}
{{- end -}}
