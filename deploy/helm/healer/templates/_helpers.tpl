{{/*
Names are fixed rather than derived from the release name: there is one healer per
cluster, its ClusterRoles are cluster-wide (healer-serve, healer-remediator-*), and the
agents, Alertmanager and the documentation refer to the Services by these names.
*/}}

{{/* The labels every object carries. */}}
{{- define "healer.labels" -}}
app.kubernetes.io/name: healer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "serve"). */}}
{{- define "healer.selector" -}}
app.kubernetes.io/name: healer
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component: (dict "ctx" $ "component" "serve"). */}}
{{- define "healer.componentLabels" -}}
{{ include "healer.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* healer's image. */}}
{{- define "healer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* The NATS client URL without credentials: the chart's NATS Service. */}}
{{- define "healer.natsHostURL" -}}
{{ ternary "tls" "nats" (ne .Values.nats.tls.secretName "") }}://nats.{{ .Release.Namespace }}.svc:4222
{{- end }}

{{/* The configuration of serve (serve.yaml), as a dict: the chart's defaults with
serve.config merged over them. */}}
{{- define "healer.serveConfig" -}}
{{- $d := dict
  "dataDir" "/var/lib/healer"
  "listen" "0.0.0.0:8080"
  "webhookTokenFile" "/etc/healer/tokens/webhook-token"
  "apiTokenFile" "/etc/healer/tokens/api-token"
-}}
{{- if .Values.nats.enabled }}
{{- $_ := set $d "streams" (dict "replicas" (min 3 (int .Values.nats.replicas))) }}
{{- end }}
{{- if .Values.slack.secretName }}
{{- $_ := set $d "slack" (dict "botTokenFile" "/etc/healer/slack/bot-token" "signingSecretFile" "/etc/healer/slack/signing-secret") }}
{{- end }}
{{- if .Values.serve.policies.configMap }}
{{- $_ := set $d "policies" "/etc/healer-policies" }}
{{- end }}
{{- toYaml (mergeOverwrite $d (deepCopy .Values.serve.config)) }}
{{- end }}

{{/* The TLS secrets' namespaces serve's certexpiry detector lists, from serve.config. */}}
{{- define "healer.secretNamespaces" -}}
{{- $ce := .Values.serve.config.certExpiry | default dict }}
{{- if hasKey $ce "secrets" }}
{{- $s := $ce.secrets | default dict }}
{{- if not $s.namespaces }}
{{- fail "serve.config.certExpiry.secrets: list the namespaces in secrets.namespaces; without them serve would list secrets in every namespace, which this chart does not grant" }}
{{- end }}
{{- toJson (dict "namespaces" $s.namespaces) }}
{{- else }}
{{- toJson (dict "namespaces" list) }}
{{- end }}
{{- end }}

{{/* Whether a remediator is enabled: (dict "ctx" $ "name" "node.drain"). Missing means enabled. */}}
{{- define "healer.remediatorEnabled" -}}
{{- $r := index (.ctx.Values.remediators | default dict) .name | default dict }}
{{- if hasKey $r "enabled" }}{{ $r.enabled }}{{ else }}true{{ end }}
{{- end }}

{{/* The agents' nats configuration block, as a dict: (dict "ctx" $ "user" .Values.agent.x.config.nats). */}}
{{- define "healer.agentNATS" -}}
{{- $ctx := .ctx }}
{{- $n := dict "url" ($ctx.Values.agent.natsURL | default (include "healer.natsHostURL" $ctx)) }}
{{- $n = mergeOverwrite $n (deepCopy ($ctx.Values.agent.natsAuth | default dict)) }}
{{- if $ctx.Values.nats.tls.secretName }}
{{- $_ := set $n "caFile" "/etc/healer-agent/ca.crt" }}
{{- end }}
{{- toYaml (mergeOverwrite $n (deepCopy (.user | default dict))) }}
{{- end }}
