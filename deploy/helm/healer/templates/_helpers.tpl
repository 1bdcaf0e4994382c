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

{{/* Whether serve logs in to the chart's NATS as nats.auth.serveUser with the password
in nats.auth's Secret: "true", or empty when NATS is external or serve.config gives a
creds or nkey file instead (operator mode). */}}
{{- define "healer.serveNATSPassword" -}}
{{- $c := .Values.serve.config }}
{{- if and .Values.nats.enabled (not $c.natsCredsFile) (not $c.natsNKeyFile) }}true{{ end }}
{{- end }}

{{/* The configuration of serve (serve.yaml), as a dict: the chart's defaults with
serve.config merged over them. The URLs of the chart's NATS and Redis carry no
password: serve reads the passwords from the files mounted from their Secrets. */}}
{{- define "healer.serveConfig" -}}
{{- $d := dict
  "dataDir" "/var/lib/healer"
  "listen" "0.0.0.0:8080"
  "webhookTokenFile" "/etc/healer/tokens/webhook-token"
  "apiTokenFile" "/etc/healer/tokens/api-token"
  "audit" (dict "signingKeyFile" "/etc/healer/audit/signing-key")
-}}
{{- if .Values.serve.audit.checkpoints.persistentVolumeClaim }}
{{- $_ := set $d.audit "checkpointsDir" "/var/lib/healer-checkpoints" }}
{{- end }}
{{- if .Values.nats.enabled }}
{{- $_ := set $d "natsURL" (include "healer.natsHostURL" .) }}
{{- $_ := set $d "streams" (dict "replicas" (min 3 (int .Values.nats.replicas))) }}
{{- end }}
{{- if include "healer.serveNATSPassword" . }}
{{- $_ := set $d "natsUser" .Values.nats.auth.serveUser }}
{{- $_ := set $d "natsPasswordFile" "/etc/healer/nats/serve-password" }}
{{- end }}
{{- if .Values.nats.tls.secretName }}
{{- $_ := set $d "natsCAFile" "/etc/healer/nats-ca/ca.crt" }}
{{- end }}
{{- if .Values.redis.enabled }}
{{- $_ := set $d "redisURL" (printf "redis://redis.%s.svc:6379/0" .Release.Namespace) }}
{{- $_ := set $d "redisPasswordFile" "/etc/healer/redis/password" }}
{{- end }}
{{- if .Values.slack.secretName }}
{{- $_ := set $d "slack" (dict "botTokenFile" "/etc/healer/slack/bot-token" "signingSecretFile" "/etc/healer/slack/signing-secret") }}
{{- end }}
{{- if .Values.serve.policies.configMap }}
{{- $_ := set $d "policies" "/etc/healer-policies" }}
{{- end }}
{{- $cfg := mergeOverwrite $d (deepCopy .Values.serve.config) }}
{{- /* The union, not the list of serve.config alone: a remediator switched off
under remediators has lost its RBAC too. */}}
{{- $off := include "healer.disabledRemediators" . | fromJsonArray }}
{{- if $off }}
{{- $_ := set $cfg "disabledRemediators" $off }}
{{- end }}
{{- toYaml $cfg }}
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

{{/* The remediators left out of serve, as a JSON list, sorted: those with
remediators.<name>.enabled false and those in serve.config.disabledRemediators. A name
the registry does not know fails the render. */}}
{{- define "healer.disabledRemediators" -}}
{{- $known := include "healer.remediatorNames" . | fromJsonArray }}
{{- $off := list }}
{{- range $name, $r := .Values.remediators | default dict }}
{{- if not (has $name $known) }}
{{- fail (printf "remediators.%s: not a remediator; the registry's are %s" $name (join ", " $known)) }}
{{- end }}
{{- if and (kindIs "map" $r) (hasKey $r "enabled") (not $r.enabled) }}
{{- $off = append $off $name }}
{{- end }}
{{- end }}
{{- range .Values.serve.config.disabledRemediators | default list }}
{{- if not (has . $known) }}
{{- fail (printf "serve.config.disabledRemediators: %s is not a remediator; the registry's are %s" . (join ", " $known)) }}
{{- end }}
{{- $off = append $off . }}
{{- end }}
{{- toJson ($off | uniq | sortAlpha) }}
{{- end }}

{{/* Whether a remediator is enabled: (dict "ctx" $ "name" "node.drain"). Missing means
enabled; off under remediators or in serve.config.disabledRemediators means not. */}}
{{- define "healer.remediatorEnabled" -}}
{{- not (has .name (include "healer.disabledRemediators" .ctx | fromJsonArray)) }}
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
