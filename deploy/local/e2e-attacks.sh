# shellcheck shell=bash
# The attacks of docs/security.md ("QR login threats") against the running
# cluster in its default configuration, as checks of deploy/local/e2e.sh
# (sourced after e2e-lib.sh; same globals). Each check plays the attacker
# with real clients and asserts the documented refusal.

# A second phone user, the attacker (a development token).
mallory_token() {
  http POST "$HTTP_URL/v1/dev/token" '{"user_id":"mallory","display_name":"Mallory"}'
  json token <<<"$BODY"
}

# The newest PENDING snapshot's qr_payload in a watcher's file.
last_payload() {
  python3 -c '
import json, sys
last = ""
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    if line.startswith("data:"):
        line = line[5:].strip()
    try:
        doc = json.loads(line)
    except ValueError:
        continue
    if isinstance(doc, dict) and doc.get("state") == "PENDING" and doc.get("qr_payload"):
        last = doc["qr_payload"]
print(last)' "$1"
}

# The observer scans the victim's QR code first and confirms with their own
# account (picking the right number: they see the screen too). The victim's
# browser is told who confirmed (the page names them and waits for a click)
# and nothing signs it in: the session stays CONFIRMED, unredeemed, until the
# victim's "Not you? Start over" cancels it.
check_observer_confirms() {
  local file="$WORK/watch-observer" mallory got name code
  mallory="$(mallory_token)"
  [[ -n "$mallory" ]] || { echo "no token for Mallory"; return 1; }
  create || return 1
  start_sse_curl "$file" edge-1 || return 1
  wait_state "$file" PENDING 10 >/dev/null || { echo "watcher saw no first snapshot"; return 1; }
  phone scan "$HTTP_URL" "$mallory"
  [[ "$STATUS" == 200 ]] || { echo "Mallory's scan returned HTTP $STATUS: $BODY"; return 1; }
  wait_state "$file" SCANNED 10 >/dev/null || { echo "watcher never saw SCANNED"; return 1; }
  name="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("data:") and "\"SCANNED\"" in line:
        print(json.loads(line[5:]).get("user_display_name") or "")' "$file")"
  [[ -z "$name" ]] || { echo "the browser learnt the scanner's name ($name) before any confirm"; return 1; }
  phone confirm "$HTTP_URL" "$mallory"
  [[ "$STATUS" == 200 ]] || { echo "Mallory's confirm returned HTTP $STATUS: $BODY"; return 1; }
  got="$(wait_state "$file" CONFIRMED 10)" || { echo "watcher never saw CONFIRMED"; return 1; }
  name="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("data:") and "\"CONFIRMED\"" in line:
        print(json.loads(line[5:]).get("user_display_name") or "")' "$file")"
  [[ "$name" == "Mallory (mallory)" ]] || { echo "CONFIRMED names '$name', not the account that confirmed"; return 1; }
  # The victim's own phone comes too late.
  phone scan "$HTTP_URL"
  code="$(json error.code <<<"$BODY")"
  [[ "$STATUS" == 403 || "$STATUS" == 409 ]] || { echo "the victim's late scan returned HTTP $STATUS"; return 1; }
  # Nothing redeemed it; the victim starts over.
  http DELETE "$EDGE2_URL/v1/login-sessions/$SID" '' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 200 && "$(json state <<<"$BODY")" == CANCELLED ]] ||
    { echo "cancel after CONFIRMED returned HTTP $STATUS: $BODY"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/redeem" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 409 ]] || { echo "redeem after start-over returned HTTP $STATUS"; return 1; }
  echo "Mallory scanned first and confirmed: SCANNED carried no name, CONFIRMED v${got% *} named Mallory and stayed unredeemed; the victim's scan got $code; cancel (not you) → CANCELLED; redeem afterwards 409"
}

# A relayed QR code (the attacker's page shown to the victim's phone): the
# victim sees no number on their own screen and picks one of the three that
# is not the attacker's; the session is DENIED (wrong_match), one try only.
check_wrong_match() {
  local file="$WORK/watch-match" got wrong right
  create || return 1
  start_sse_curl "$file" edge-1 || return 1
  wait_state "$file" PENDING 10 >/dev/null || { echo "watcher saw no first snapshot"; return 1; }
  expect_phone scan "$HTTP_URL" '' || return 1
  right="$(shown_match_code)"
  wrong="$(python3 -c '
import json, sys
right = int(sys.argv[2])
print(next(c for c in json.loads(sys.argv[1])["match_choices"] if c != right))' "$BODY" "$right")"
  [[ -n "$wrong" ]] || { echo "no wrong choice among the scan's three: $BODY"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/confirm" "{\"match_code\":$wrong}" -H "Authorization: Bearer $USER_TOKEN"
  [[ "$STATUS" == 403 && "$(json error.code <<<"$BODY")" == wrong_match ]] ||
    { echo "a wrong pick returned HTTP $STATUS: $BODY"; return 1; }
  got="$(wait_state "$file" DENIED 10)" || { echo "watcher never saw DENIED"; return 1; }
  grep -q '"deny_reason":"wrong_match"' "$file" || { echo "DENIED without deny_reason wrong_match"; return 1; }
  http POST "$HTTP_URL/v1/login-sessions/$SID/confirm" "{\"match_code\":$right}" -H "Authorization: Bearer $USER_TOKEN"
  [[ "$STATUS" == 409 ]] || { echo "the right number after a wrong one returned HTTP $STATUS"; return 1; }
  echo "picked $wrong instead of $right: 403 wrong_match; DENIED v${got% *} (wrong_match) reached the browser; the right number afterwards 409"
}

# A photo of the QR code taken before it was replaced: once the browser
# shows the next code (QRLOGIN_QR_ROTATION, 25 s by default) and the grace
# (QRLOGIN_QR_GRACE, 3 s) is over, the old payload scans as qr_replaced and
# the one on screen scans. Needs a PENDING deadline above 30 s (skipped
# under e2e.sh --start's 15 s).
check_replaced_qr() {
  local file="$WORK/watch-rotate" old new deadline
  create || return 1
  if ((TTL < 31)); then
    echo "the PENDING deadline is ${TTL}s, shorter than a rotation and its grace"
    return 2
  fi
  old="$QR_PAYLOAD"
  start_sse_curl "$file" edge-1 || return 1
  deadline=$((SECONDS + 32))
  new=''
  while ((SECONDS < deadline)); do
    new="$(last_payload "$file")"
    [[ -n "$new" && "$new" != "$old" ]] && break
    sleep 0.2
  done
  [[ -n "$new" && "$new" != "$old" ]] || { echo "the browser's stream never showed a new QR code"; return 1; }
  # The previous payload stays good for the grace after the boundary.
  sleep 3.5
  QR_PAYLOAD="$old"
  phone scan "$HTTP_URL"
  [[ "$STATUS" == 409 && "$(json error.code <<<"$BODY")" == qr_replaced ]] ||
    { echo "the replaced payload scanned with HTTP $STATUS: $BODY"; return 1; }
  QR_PAYLOAD="$new"
  expect_phone scan "$HTTP_URL" '' || return 1
  echo "the stream showed ${new##*#} after ${old##*#} (same version, no write); the old payload → 409 qr_replaced; the one on screen scans"
}

# A stolen browser secret without the browser's key: a key-bound session
# (create with the public JWK) refuses redeem without a proof and with a
# proof of another key; the key's own proof redeems.
check_stolen_secret() {
  local jwk thumb htu
  jwk="$(node "$HERE/dpop.mjs" keygen "$WORK/browser.key")" || { echo "cannot make a key"; return 1; }
  node "$HERE/dpop.mjs" keygen "$WORK/thief.key" >/dev/null || return 1
  http POST "$HTTP_URL/v1/login-sessions" "{\"public_key\":$jwk}"
  [[ "$STATUS" == 201 ]] || { echo "key-bound create returned HTTP $STATUS: $BODY"; return 1; }
  { read -r SID; read -r SECRET; read -r QR_PAYLOAD; read -r thumb; } < <(json session_id browser_secret qr_payload key_thumbprint <<<"$BODY")
  http POST "$HTTP_URL/v1/dev/token" '{"user_id":"alice-key","display_name":"Alice"}'
  USER_TOKEN="$(json token <<<"$BODY")"
  [[ -n "$thumb" ]] || { echo "no key_thumbprint in the create answer"; return 1; }
  expect_phone scan "$HTTP_URL" '' || return 1
  expect_phone confirm "$HTTP_URL" '' || return 1
  htu="$HTTP_URL/v1/login-sessions/$SID/redeem"
  http POST "$htu" '{}' -H "$(auth_browser "$SECRET")"
  [[ "$STATUS" == 401 && "$(json error.code <<<"$BODY")" == proof_required ]] ||
    { echo "redeem with the secret alone returned HTTP $STATUS: $BODY"; return 1; }
  http POST "$htu" '{}' -H "$(auth_browser "$SECRET")" -H "DPoP: $(node "$HERE/dpop.mjs" proof "$WORK/thief.key" "$SID" "$htu")"
  [[ "$STATUS" == 401 && "$(json error.code <<<"$BODY")" == invalid_proof ]] ||
    { echo "redeem with another key's proof returned HTTP $STATUS: $BODY"; return 1; }
  http POST "$htu" '{}' -H "$(auth_browser "$SECRET")" -H "DPoP: $(node "$HERE/dpop.mjs" proof "$WORK/browser.key" "$SID" "$htu")"
  [[ "$STATUS" == 200 && "$(json user.display_name <<<"$BODY")" == "Alice (alice-key)" ]] ||
    { echo "redeem with the browser key's proof returned HTTP $STATUS: $BODY"; return 1; }
  echo "bound to ${thumb:0:10}…: the secret alone → 401 proof_required; another key's proof → 401 invalid_proof; the browser key's proof → 200 (Alice)"
}
