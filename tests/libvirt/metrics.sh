# Sourced by tests/libvirt/run.sh: virtdlmd's Prometheus metrics (docs/GUIDE.md, "Watching
# virt-dlm with Prometheus") scraped from the real daemon while VM vdlm-t-a holds its locks
# and vdlm-t-b was refused, checked with promtool (Debian's prometheus package), and the
# shipped alert rules checked and unit-tested with promtool. METRICS_SCRAPE=FILE keeps a
# copy of the scrape.

# A free TCP port on 127.0.0.1 for metrics_listen.
metrics_port() {
    local p
    for ((p = 29665; p < 29765; p++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

# The value of one sample (name with its labels, as printed) in scrape FILE.
sample() { awk -v s="$2" '$1 == s { print $2; found = 1 } END { exit !found }' "$1"; }
at_least() { local v; v=$(sample "$1" "$2") && awk -v v="$v" -v m="$3" 'BEGIN { exit !(v >= m) }'; }

# The checks of one scrape FILE (each an `ok` step of test_metrics).
scrape_has_a_locks() {
    at_least "$1" 'virtdlm_locks{mode="EX"}' 1 && at_least "$1" 'virtdlm_locks{mode="CW"}' 1 &&
        at_least "$1" 'virtdlm_locks{mode="PR"}' 1
}
scrape_counts_requests() {
    at_least "$1" 'virtdlm_acquires_total{mode="EX"}' 1 &&
        at_least "$1" 'virtdlm_acquire_refusals_total{reason="conflict"}' 1 &&
        at_least "$1" 'virtdlm_acquire_duration_seconds_count{result="granted"}' 1 &&
        at_least "$1" 'virtdlm_acquire_duration_seconds_count{result="refused"}' 1
}
scrape_has_state() {
    at_least "$1" virtdlm_last_lock_change_timestamp_seconds 1 && at_least "$1" virtdlm_journal_size_bytes 1 &&
        [ "$(sample "$1" virtdlm_locks_lost)" = 0 ] && [ "$(sample "$1" virtdlm_lock_loss_unstopped_vms)" = 0 ]
}
promtool_metrics() { promtool check metrics < "$1"; }
no_textfile_tmp() { ! ls -A "$T" | grep -q '^\.virtdlm\.prom\.tmp'; }
http_code() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = "$2" ]; }

test_metrics() { # test_metrics PORT
    local port=$1 body=$T/metrics.txt file=$T/virtdlm.prom
    if ! command -v promtool >/dev/null; then
        fail "promtool is missing: install Debian's prometheus package (tests/install-deps.sh); the metrics are not checked"
        return
    fi
    ok "GET /metrics on 127.0.0.1:$port answers 200" \
        curl -sS --fail --max-time 10 -D "$T/metrics.head" -o "$body" "http://127.0.0.1:$port/metrics"
    [ -n "${METRICS_SCRAPE:-}" ] && cp "$body" "$METRICS_SCRAPE"
    ok "the scrape is the Prometheus text format (Content-Type text/plain; version=0.0.4)" \
        grep -qi '^content-type: text/plain; version=0.0.4' "$T/metrics.head"
    ok "promtool check metrics accepts the scrape" promtool_metrics "$body"
    ok "the scrape shows a's exclusive, shareable and read-only locks (virtdlm_locks by mode)" \
        scrape_has_a_locks "$body"
    ok "the scrape counts the grants and b's refusal (reason conflict), with their latency" \
        scrape_counts_requests "$body"
    ok "the scrape has the last lock change's time, the journal's size and no lock loss" scrape_has_state "$body"
    ok "the textfile shows b's refusal too" \
        wait_for 20 at_least "$file" 'virtdlm_acquire_refusals_total{reason="conflict"}' 1
    ok "promtool check metrics accepts the textfile" promtool_metrics "$file"
    ok "no temporary textfile is left beside it" no_textfile_tmp
    ok "a path other than /metrics is 404" http_code "http://127.0.0.1:$port/other" 404
    ok "promtool check rules accepts deploy/prometheus/virtdlm-alerts.yml" \
        promtool check rules deploy/prometheus/virtdlm-alerts.yml
    ok "promtool test rules: the alerts fire on lock loss and on a VM running without its locks" \
        promtool test rules tests/prometheus/virtdlm-alerts.test.yml
}
