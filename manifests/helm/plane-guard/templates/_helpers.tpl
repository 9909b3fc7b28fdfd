{{/*
Names and labels shared by every template. A new template (say an optional ClusterRole) needs
only `plane-guard.fullname`, `plane-guard.labels` and, for pods, `plane-guard.podSecurityContext`.
*/}}

{{- define "plane-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>` when it already says plane-guard, else `<release>-plane-guard`. */}}
{{- define "plane-guard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "plane-guard.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: the kustomize manifests' two, and Helm's. */}}
{{- define "plane-guard.labels" -}}
app.kubernetes.io/name: {{ include "plane-guard.name" . }}
app.kubernetes.io/part-of: plane-guard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector of the webhook pods (Service, PodDisruptionBudget, NetworkPolicy, spreading). */}}
{{- define "plane-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plane-guard.name" . }}
app.kubernetes.io/component: webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plane-guard.tlsSecret" -}}
{{- if eq .Values.certificates.source "existingSecret" -}}
{{- required "certificates.existingSecret.name is required with certificates.source=existingSecret: the name of your kubernetes.io/tls Secret" .Values.certificates.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "plane-guard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "plane-guard.image" -}}
{{- $tag := .image.tag | default .chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "plane-guard.webhookImage" -}}
{{- include "plane-guard.image" (dict "image" .Values.images.webhook "chart" .Chart) -}}
{{- end -}}

{{- define "plane-guard.runtimeImage" -}}
{{- include "plane-guard.image" (dict "image" .Values.images.runtime "chart" .Chart) -}}
{{- end -}}

{{/* Pod securityContext of pods that mount no Secret (the Jobs): without fsGroup. */}}
{{- define "plane-guard.jobPodSecurityContext" -}}
{{- toYaml (omit .Values.podSecurityContext "fsGroup") -}}
{{- end -}}

{{- define "plane-guard.pullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The policy file: `policy`, or the default policy, with the init container's image, pull
policy and (when given) pull secrets from `images.runtime`. The text is edited, never parsed and
written back: the order of the roles is the order they are tried in, and comments stay. The
runtime section's `image:`, `imagePullPolicy:` and `imagePullSecrets:` lines are replaced (the
last added after `image:` when missing; all added as a `runtime:` section when there is none),
and the result is read back to prove it says what `images.runtime` says.
*/}}
{{- define "plane-guard.policy" -}}
{{- $text := .Values.policy | default (.Files.Get "files/policy.yaml") -}}
{{- $image := include "plane-guard.runtimeImage" . -}}
{{- $pull := .Values.images.runtime.pullPolicy -}}
{{- $secrets := .Values.images.runtime.pullSecrets | default list -}}
{{- $secretList := printf "[%s]" (join ", " $secrets) -}}
{{- $policy := fromYaml $text -}}
{{- if hasKey $policy "Error" -}}
{{- fail (printf "policy is not valid YAML (%s): check it with `plane-guard policy check FILE`" (get $policy "Error")) -}}
{{- end -}}
{{- if not (hasKey $policy "runtime") -}}
{{- $text = printf "%s\n# From the chart's images.runtime.\nruntime:\n  image: %s\n  imagePullPolicy: %s\n" (trimSuffix "\n" $text) $image $pull -}}
{{- if $secrets -}}
{{- $text = printf "%s  imagePullSecrets: %s\n" $text $secretList -}}
{{- end -}}
{{- else -}}
{{- $text = regexReplaceAll `(?m)^(runtime:[ \t]*\n(?:(?:[ \t]+.*)?\n)*?[ \t]+image:[ \t]*)\S.*$` $text (printf "${1}%s" $image) -}}
{{- $text = regexReplaceAll `(?m)^(runtime:[ \t]*\n(?:(?:[ \t]+.*)?\n)*?[ \t]+imagePullPolicy:[ \t]*)\S.*$` $text (printf "${1}%s" $pull) -}}
{{- if and $secrets (hasKey (get $policy "runtime" | default dict) "imagePullSecrets") -}}
{{- $text = regexReplaceAll `(?m)^(runtime:[ \t]*\n(?:(?:[ \t]+.*)?\n)*?[ \t]+imagePullSecrets:[ \t]*)\S.*$` $text (printf "${1}%s" $secretList) -}}
{{- else if $secrets -}}
{{- $text = regexReplaceAll `(?m)^(runtime:[ \t]*\n(?:(?:[ \t]+.*)?\n)*?([ \t]+)image:[ \t]*\S.*)$` $text (printf "${1}\n${2}imagePullSecrets: %s" $secretList) -}}
{{- end -}}
{{- end -}}
{{- $runtime := get (fromYaml $text) "runtime" | default dict -}}
{{- if or (ne (get $runtime "image" | default "") $image) (ne (get $runtime "imagePullPolicy" | default "") $pull) -}}
{{- fail (printf "could not set the policy's runtime.image to %s and runtime.imagePullPolicy to %s: write both in its runtime section, one per line (`image: ...`, `imagePullPolicy: ...`), or leave images.runtime as it is" $image $pull) -}}
{{- end -}}
{{- if and $secrets (ne (toJson (get $runtime "imagePullSecrets")) (toJson $secrets)) -}}
{{- fail (printf "could not set the policy's runtime.imagePullSecrets to %s: write it in its runtime section on one line (`imagePullSecrets: [a, b]`), or leave images.runtime.pullSecrets empty" $secretList) -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* The matchConditions of the four webhooks (see values.yaml `webhooks.matchConditions`). */}}
{{- define "plane-guard.matchConditions" -}}
{{- if .Values.webhooks.matchConditions -}}
{{- toYaml .Values.webhooks.matchConditions -}}
{{- else -}}
{{- .Files.Get "files/match-conditions.yaml" -}}
{{- end -}}
{{- end -}}

{{- define "plane-guard.certsArgs" -}}
- --service={{ include "plane-guard.fullname" . }}
- --namespace={{ .Release.Namespace }}
- --secret={{ include "plane-guard.tlsSecret" . }}
- --mutating-webhook={{ include "plane-guard.fullname" . }}
- --validating-webhook={{ include "plane-guard.fullname" . }}
- --days={{ .Values.certificates.selfSigned.days }}
- --renew-before-days={{ .Values.certificates.selfSigned.renewBeforeDays }}
{{- end -}}
