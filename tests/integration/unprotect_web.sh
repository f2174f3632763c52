#!/usr/bin/env bash
# unprotect_web.sh - Description: the configuration manager's Unprotect, driven with curl against a real
# appliance and agent with loop disks: POST /api/disks/ID/unprotect (202) makes the agent stop tracking
# the disk and forget it, the appliance shows it unprotected and its point still restores byte-exact;
# asking again (at once, for the deletion, or later) is 409 and deletes nothing; delete_replica=1
# without, or with a wrong, confirm is 400 and changes nothing; with confirm=DISK_ID the disk's image,
# point images, cache and catalog rows are deleted; an unknown disk is 404, a POST without the CSRF
# token 403; checkpoint and resync of an unprotected disk are 409.
set -u
. "$(dirname "$0")/lib/replication.sh"
rpl_setup 300

PW='unprotect from the page'
printf '%s\n' "$PW" > "$RT/admin-pw"
"$AP" init --state "$RT/app" --storage "file:$RT/replica" --admin-password-file "$RT/admin-pw" > "$RT/init.out" \
  || fail "init failed"
RPL_KEY=$(tail -n 1 "$RT/init.out")
WEB_PORT=$(free_port)
rpl_appliance_start --rpo 0.5 --web "127.0.0.1:$WEB_PORT"
U=https://127.0.0.1:$WEB_PORT
web_up() { curl -sk -o /dev/null --max-time 2 "$U/"; }
wait_until 10 "the configuration manager did not come up" web_up
rpl_agent_register
rpl_agent_start
rpl_loop keep 32M random
rpl_loop del 32M random
for dev in "$keep" "$del"; do
  "$AG" protect "$dev" --state "$RT/agent" >/dev/null || fail "protect $dev failed"
done
rpl_wait_cycle "$keep" 1
rpl_wait_cycle "$del" 1
keep_id=$(rpl_disk_id "$keep")
del_id=$(rpl_disk_id "$del")
dd if=/dev/urandom of="$keep" bs=1M count=4 seek=8 oflag=direct conv=notrunc status=none
point=$("$AG" checkpoint --wait "$keep" --state "$RT/agent" | tail -n 1) || fail "checkpoint of $keep failed"
dd if="$keep" of="$RT/at-point.img" bs=1M iflag=direct status=none
del_point=$("$AG" checkpoint --wait "$del" --state "$RT/agent" | tail -n 1) || fail "checkpoint of $del failed"

# req METHOD PATH [curl args...]: prints the HTTP status; the body goes to $RT/body
req() {
  local m=$1 p=$2 code
  shift 2
  code=$(curl -sk -o "$RT/body" -w '%{http_code}' -X "$m" -b "$RT/jar" -c "$RT/jar" "$@" "$U$p") || code=000
  echo "$code"
}
expect() { # expect CODE METHOD PATH [args]: fails unless the status is CODE
  local want=$1 got
  shift
  got=$(req "$@")
  [ "$got" = "$want" ] || fail "$1 $2: HTTP $got, expected $want: $(head -c 400 "$RT/body")"
}
app_disk() { "$AP" status --state "$RT/app" --json | json_field -d none - "disks.[disk_id=$1].$2"; }
agent_has() { [ "$("$AG" status --state "$RT/agent" --json | json_field -d none - "disks.[device=$1].disk_id")" != none ]; }

say "log in"
: > "$RT/jar"
expect 200 POST /api/login --data-urlencode "password=$PW"
CSRF=$(json_field "$RT/body" csrf_token)
[[ $CSRF =~ ^[0-9a-f]{64}$ ]] || fail "no CSRF token in the login answer: $(cat "$RT/body")"
H=(-H "X-CSRF-Token: $CSRF")

say "refusals: no CSRF token (403), an unknown disk (404), not a UUID (400), an unknown field (400)"
expect 403 POST "/api/disks/$keep_id/unprotect" --data ""
expect 404 POST "/api/disks/6f1c1a52-8d0e-4b0f-9a40-3a1f2c9d7e01/unprotect" "${H[@]}" --data ""
expect 400 POST "/api/disks/not-a-disk-id-not-a-disk-id-not-a-dis/unprotect" "${H[@]}" --data ""
expect 400 POST "/api/disks/$keep_id/unprotect" "${H[@]}" --data "delete=1"
agent_has "$keep" || fail "a refused request unprotected $keep"
[ "$(app_disk "$keep_id" state)" != unprotected ] || fail "a refused request unprotected $keep_id on the appliance"

say "unprotect $keep (disk $keep_id) from the page, keeping its replica"
expect 202 POST "/api/disks/$keep_id/unprotect" "${H[@]}" --data ""
grep -q "kept" "$RT/body" || fail "the answer does not say the replica is kept: $(cat "$RT/body")"
# Asked again at once, now for the deletion: refused, whether the first request is done or not.
expect 409 POST "/api/disks/$keep_id/unprotect" "${H[@]}" --data "delete_replica=1&confirm=$keep_id"
grep -q "asked already\|unprotected already" "$RT/body" || fail "the repeated unprotect's 409 says: $(cat "$RT/body")"
gone_from_agent() { ! agent_has "$keep"; }
wait_until -i 0.5 60 "the agent still lists $keep" gone_from_agent
"$AG" cbt status "$keep" --state "$RT/agent" >/dev/null 2>&1 && fail "$keep is still tracked"
grep -q "$keep: unprotect asked by the appliance" "$RT/agent.log" || fail "the agent did not log the appliance's request"
unprotected() { [ "$(app_disk "$keep_id" state)" = unprotected ]; }
wait_until -i 0.5 30 "the appliance does not show $keep_id unprotected" unprotected
agent_has "$del" || fail "the other disk $del was unprotected too"
committed=$(app_disk "$keep_id" last_committed_cycle)
dd if=/dev/urandom of="$keep" bs=1M count=8 seek=16 oflag=direct conv=notrunc status=none
"$AP" restore --state "$RT/app" --disk "$keep_id" --point "$point" --out "$RT/restored.img" >/dev/null \
  || fail "restore of $point of the unprotected disk failed"
cmp "$RT/restored.img" "$RT/at-point.img" || fail "the restored point differs from the disk as it was at $point"
[ "$(app_disk "$keep_id" last_committed_cycle)" -eq "$committed" ] || fail "cycles of the unprotected disk went on"
expect 409 POST "/api/disks/$keep_id/unprotect" "${H[@]}" --data ""
grep -q "unprotected already" "$RT/body" || fail "the second unprotect's 409 does not say why: $(cat "$RT/body")"
for action in checkpoint resync; do
  expect 409 POST "/api/disks/$keep_id/$action" "${H[@]}" --data ""
  grep -q "the disk is unprotected" "$RT/body" || fail "$action of the unprotected disk: $(cat "$RT/body")"
done

say "delete_replica=1 without, or with a wrong, confirm: 400, nothing changed"
ls "$RT/replica" | grep -Eq "^$del_id\.img\.(cycle|undo)-" || fail "no point image (reflink or undo file) of $del_id to delete"
expect 400 POST "/api/disks/$del_id/unprotect" "${H[@]}" --data "delete_replica=1"
grep -q "confirm=$del_id" "$RT/body" || fail "the 400 does not say to confirm with the disk id: $(cat "$RT/body")"
expect 400 POST "/api/disks/$del_id/unprotect" "${H[@]}" --data "delete_replica=1&confirm=$keep_id"
grep -q "confirm=$del_id" "$RT/body" || fail "the 400 does not say to confirm with the disk id: $(cat "$RT/body")"
expect 400 POST "/api/disks/$del_id/unprotect" "${H[@]}" --data "delete_replica=yes&confirm=$del_id"
agent_has "$del" || fail "a refused deletion unprotected $del"
[ "$(app_disk "$del_id" state)" != unprotected ] || fail "a refused deletion unprotected $del_id"
[ -e "$RT/replica/$del_id.img" ] || fail "a refused deletion removed the image of $del_id"
before=$(app_disk "$del_id" last_committed_cycle)
"$AG" checkpoint --wait "$del" --state "$RT/agent" >/dev/null || fail "$del takes no checkpoint after the refusals"
[ "$(app_disk "$del_id" last_committed_cycle)" -gt "$before" ] || fail "$del_id took no cycle after the refusals"

say "delete_replica=1 with confirm=$del_id: the replica, its points, cache and catalog rows go"
expect 202 POST "/api/disks/$del_id/unprotect" "${H[@]}" --data "delete_replica=1&confirm=$del_id"
grep -q "deletes its replica" "$RT/body" || fail "the answer does not say the replica is deleted: $(cat "$RT/body")"
deleted() { [ "$(app_disk "$del_id" state)" = none ]; }
wait_until -i 0.5 60 "the appliance still lists the deleted disk $del_id" deleted
# The agent tells the appliance first and forgets the disk after (a send that fails is asked again
# on the next session): the appliance may finish its deletion before the agent has forgotten it.
del_gone_from_agent() { ! agent_has "$del"; }
wait_until -i 0.5 60 "the agent still lists $del" del_gone_from_agent
"$AG" cbt status "$del" --state "$RT/agent" >/dev/null 2>&1 && fail "$del is still tracked"
rpl_expect_deleted "$del_id"
out=$("$AP" restore --state "$RT/app" --disk "$del_id" --point "$del_point" --out "$RT/deleted.img" 2>&1) \
  && fail "restore of the deleted disk succeeded"
[ "$(app_disk "$keep_id" state)" = unprotected ] || fail "the kept disk is $(app_disk "$keep_id" state) now"
"$AP" restore --state "$RT/app" --disk "$keep_id" --point "$point" --out "$RT/restored2.img" >/dev/null \
  || fail "the kept disk's point no longer restores after the other's deletion"
cmp "$RT/restored2.img" "$RT/at-point.img" || fail "the kept disk's point differs after the other's deletion"
echo "unprotect_web: ok (disk $keep_id unprotected from the page, $point restored exactly; $del_id deleted with" \
  "confirm; refusals 400/403/404/409 changed nothing)"
