#!/usr/bin/env bash
# The README's tour, as a script: every step against a running stack, stopping at the first that does
# not answer as the README says. The test suite runs it against a real stack (tests/tests/tour.rs).
#
#   ARTIFACTS_KEY=$(cat /path/to/.artifacts/admin-key) examples/tour.sh
#
# The stack must allow `file://` repositories under the tour's directory, for the sample component, as
# `scripts/up --dev` does (or ARTIFACTS__GIT__ALLOWED_SCHEMES=https,file
# ARTIFACTS__GIT__FILE_ROOTS=/tmp/artifacts-tour scripts/up):
#
#   scripts/up --dev
#
# Settings: ARTIFACTS_URL (default http://127.0.0.1:8080), ARTIFACTS_KEY (an admin key), TOUR_DIR
# (default /tmp/artifacts-tour). Needs curl, git and python3 (to read JSON); docker for the pull step.
set -euo pipefail

URL=${ARTIFACTS_URL:-http://127.0.0.1:8080}
API=$URL/api/v1
KEY=${ARTIFACTS_KEY:?set ARTIFACTS_KEY to the admin key that artifacts up printed (it saved it in <data dir>/admin-key)}
TOUR_DIR=${TOUR_DIR:-/tmp/artifacts-tour}
EXAMPLES=$(cd "$(dirname "$0")" && pwd)

step() { printf '\n== %s\n' "$*"; }
fail() { echo "tour: $*" >&2; exit 1; }
# field NAME: reads a JSON document on stdin and prints its field NAME (empty when absent or null).
field() { python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"; }
# call EXPECTED_STATUS CURL_ARGS...: prints the body; fails unless the status is EXPECTED_STATUS.
call() {
    local expected=$1 body status
    shift
    body=$(mktemp)
    status=$(curl -sS -o "$body" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$@") || fail "curl $* failed"
    cat "$body"
    echo
    rm -f "$body"
    [ "$status" = "$expected" ] || fail "expected HTTP $expected, got $status from: curl $*"
}

step "health and readiness (readiness waits until every function answers)"
curl -sS "$URL/healthz"; echo
for _ in $(seq 60); do
    curl -sf "$URL/readyz" > /dev/null && break
    sleep 1
done
curl -sSf "$URL/readyz" || fail "the stack is not ready: $(curl -s "$URL/readyz")"
echo

step "an image never built is a 404 that says so; a bad name is a 400 that states the rule"
call 404 "$API/images?component=hello&branch=main&architecture=amd64"
call 400 "$API/images?component=Hello!&branch=main&architecture=amd64"

step "build an image from a Dockerfile and a context"
mkdir -p "$TOUR_DIR"
cd "$TOUR_DIR"
printf 'FROM busybox\nARG GREETING=hello\nCOPY hello.txt /\nRUN echo "$GREETING, built" > /built\nCMD ["cat", "/built", "/hello.txt"]\n' > Dockerfile
echo "hello from the build context" > hello.txt
tar -cf context.tar hello.txt
accepted=$(call 202 -F dockerfile=@Dockerfile -F context=@context.tar -F component=hello -F branch=main \
    -F architecture=amd64 -F 'buildArgs={"GREETING":"hi"}' "$API/images")
BUILD=$(field buildId <<< "$accepted")
[ -n "$BUILD" ] || fail "no buildId in $accepted"
echo "build id: $BUILD"

step "follow its log as plain text, then read how it ended"
curl -sS -N -H "Authorization: Bearer $KEY" "$API/builds/$BUILD/logs?format=text"
status=$(call 200 "$API/builds/$BUILD" | field status)
[ "$status" = succeeded ] || fail "build $BUILD $status"

step "look it up, and run it"
found=$(call 200 "$API/images?component=hello&branch=main&architecture=amd64")
image=$(field imageName <<< "$found")
if command -v docker > /dev/null; then
    registry=${image%%/*}
    echo "$KEY" | docker login "$registry" --username artifacts --password-stdin
    docker pull "$image"
    output=$(docker run --rm "$image")
    echo "$output"
    grep -q "hi, built" <<< "$output" || fail "the image printed: $output"
else
    echo "(docker is not installed here: skipping the pull)"
fi

step "a second build on another branch waits for its end (?wait) and leaves main's image alone"
call 200 -H 'Content-Type: application/json' "$API/images?wait=300" \
    -d '{"dockerfile":"FROM busybox\nRUN true\n","component":"hello","branch":"dev","architecture":"amd64"}' > /dev/null
call 200 "$API/images?component=hello&branch=main&architecture=amd64" | grep -q "$(field digest <<< "$found")" \
    || fail "main's image moved"

step "build the sample component (examples/hello-component) from a git repository"
repo=$TOUR_DIR/hello-component
rm -rf "$repo"
cp -r "$EXAMPLES/hello-component" "$repo"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=tour -c user.email=tour@example.com add .
git -C "$repo" -c user.name=tour -c user.email=tour@example.com commit -qm "hello component"
git -C "$repo" tag v1.0.0
record=$(call 200 -H 'Content-Type: application/json' "$API/components?wait=300" \
    -d "{\"url\":\"file://$repo\",\"component\":\"hello-component\",\"tag\":\"v1.0.0\",\"architecture\":\"amd64\"}")
[ "$(field status <<< "$record")" = succeeded ] || fail "the component build: $record"

step "look the component up and download it (its digest is checked)"
found=$(call 200 "$API/components?component=hello-component&tag=v1.0.0&architecture=amd64")
download=$(field downloadUrl <<< "$found")
digest=$(field digest <<< "$found")
curl -sSf -H "Authorization: Bearer $KEY" -o hello-component.tar.gz "$download"
[ "sha256:$(sha256sum hello-component.tar.gz | cut -d' ' -f1)" = "$digest" ] || fail "digest mismatch"
tar -tzf hello-component.tar.gz

step "the history, newest first"
call 200 "$API/builds?component=hello&limit=5" | python3 -c \
    'import json, sys; [print(b["buildId"], b["kind"], b["status"]) for b in json.load(sys.stdin)["builds"]]'

step "a read key limited to one component sees that one only"
created=$(call 201 -H 'Content-Type: application/json' "$API/keys" \
    -d '{"name":"tour-reader","scopes":["read"],"components":["hello-component"]}')
reader=$(field secret <<< "$created")
curl -sSf -o /dev/null -H "Authorization: Bearer $reader" \
    "$API/components?component=hello-component&tag=v1.0.0&architecture=amd64"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $reader" \
    "$API/images?component=hello&branch=main&architecture=amd64")
[ "$status" = 403 ] || fail "the reader saw another component's image ($status)"
call 200 -X DELETE "$API/keys/$(field keyId <<< "$created")" > /dev/null

if command -v artifacts > /dev/null; then
    step "the same with the artifacts client (its login kept apart from yours, under \$TOUR_DIR)"
    export XDG_CONFIG_HOME=$TOUR_DIR/config
    artifacts login "$URL" <<< "$KEY"
    artifacts whoami
    artifacts image build "$TOUR_DIR" --component hello --branch cli --build-arg GREETING=hey
    artifacts image get hello --branch cli
    rm -rf "$TOUR_DIR/extracted"
    artifacts component get hello-component@v1.0.0 -x "$TOUR_DIR/extracted"
    [ -x "$TOUR_DIR/extracted/bin/hello" ] || fail "the extracted component has no bin/hello"
    artifacts builds ls --component hello --limit 5
else
    echo "(the artifacts client is not on PATH: skipping its steps; it is target/release/artifacts in the clone)"
fi

printf '\ntour: every step answered as the README says\n'
