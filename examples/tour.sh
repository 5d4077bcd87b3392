#!/usr/bin/env bash
# The README's tour as one script: the same steps in the same order, each checked, stopping at the first
# that does not answer as the README says. It runs on any stack started with `--dev`, fresh or not, as
# often as you like: each run works in a new directory of its own and looks for nothing it did not make.
# The test suite runs it twice in a row, after the README's own tour (tests/tests/tour.rs).
#
#   scripts/up --dev                                   # in one terminal, from the clone
#   examples/tour.sh                                   # in another, from the clone
#
# `--dev` lets the stack build components from `file://` repositories under /tmp, where this tour keeps
# its sample component's repository (without it, such URLs are refused).
#
# Settings: ARTIFACTS_URL (default http://127.0.0.1:8080), ARTIFACTS_KEY (an admin key; default: the one
# `up` saved in .artifacts/admin-key of the current directory), TOUR_DIR (default /tmp: where the run makes
# its directory, removed when the tour succeeds). Needs the `artifacts` client on PATH (scripts/up builds it
# as target/release/artifacts), curl, git, tar and python3; docker for the run step, and nats-py for the
# NATS step (each skipped, saying so, when missing).
set -euo pipefail

URL=${ARTIFACTS_URL:-http://127.0.0.1:8080}
URL=${URL%/}
URL=${URL%/api/v1}
API=$URL/api/v1
if [ -z "${ARTIFACTS_KEY:-}" ] && [ -r .artifacts/admin-key ]; then
    ARTIFACTS_KEY=$(cat .artifacts/admin-key)
fi
KEY=${ARTIFACTS_KEY:?set ARTIFACTS_KEY to the admin key that artifacts up printed (it saved it in <data dir>/admin-key)}
EXAMPLES=$(cd "$(dirname "$0")" && pwd)
command -v artifacts > /dev/null \
    || { echo "tour: the artifacts client is not on PATH (scripts/up builds it: export PATH=\$PWD/target/release:\$PATH)" >&2; exit 2; }

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

# A directory of this run's own: a second run, or the README's tour done by hand, leaves nothing in its way.
work=$(mktemp -d "${TOUR_DIR:-/tmp}/artifacts-tour.XXXXXX")
echo "working in $work"
cd "$work"

step "log in with the client (its login kept in this run's directory, not yours)"
export XDG_CONFIG_HOME=$work/config ARTIFACTS_URL=$URL
unset ARTIFACTS_KEY
artifacts login "$URL" <<< "$KEY"
artifacts whoami | tee whoami.txt
grep -q admin whoami.txt || fail "whoami does not name an admin key"

step "build an image from a Dockerfile and a context, look it up, run it"
printf 'FROM busybox\nARG GREETING=hello\nCOPY hello.txt /\nRUN echo "$GREETING, built" > /built\nCMD ["cat", "/built", "/hello.txt"]\n' > Dockerfile
echo "hello from the build context" > hello.txt
artifacts image build . --component hello --branch main --build-arg GREETING=hi
artifacts image get hello --branch main | tee image.txt
image=$(awk '$1 == "image" {print $2}' image.txt)
[ -n "$image" ] || fail "artifacts image get names no image"
if command -v docker > /dev/null; then
    export DOCKER_CONFIG=$work/docker
    artifacts registry login
    output=$(docker run --rm "$image")
    echo "$output"
    grep -q "hi, built" <<< "$output" || fail "the image printed: $output"
else
    echo "(docker is not installed here: skipping the run)"
fi

step "build the sample component (examples/hello-component) from a git repository, fetch it, run it"
cp -r "$EXAMPLES/hello-component" "$work/"
git -C hello-component init -q -b main
git -C hello-component add .
# The README's commit exactly (files, author, dates): the same commit on every run, so the released
# version v1.0.0 never moves (a moved tag would be refused with 409).
GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z \
  git -C hello-component -c user.name=me -c user.email=me@example.com commit -qm hello
git -C hello-component tag v1.0.0
artifacts component build "file://$work/hello-component" --component hello-component --tag v1.0.0
artifacts component get hello-component@v1.0.0 -x hello/
output=$(hello/bin/hello)
echo "$output"
grep -q "hello from a component" <<< "$output" || fail "the component's program printed: $output"
verified=$(artifacts verify component hello-component v1.0.0)
echo "$verified"
grep -q "verified" <<< "$verified" || fail "artifacts verify said: $verified"

step "what is stored, the history, and a build followed by its id"
artifacts image ls
artifacts component ls
artifacts builds ls --component hello --limit 5
BUILD=$(artifacts image build . --component hello --branch dev --detach | cut -d' ' -f1)
[ -n "$BUILD" ] || fail "image build --detach printed no build id"
artifacts builds logs "$BUILD" -f
artifacts builds show "$BUILD" | tee show.txt
grep -q succeeded show.txt || fail "build $BUILD did not succeed"

step "the same over HTTP: lookups (an image never built is a 404 that says so; a bad name a 400 that states the rule)"
found=$(call 200 "$API/images?component=hello&branch=main&architecture=amd64")
[ "$(field imageName <<< "$found")" = "$image" ] || fail "HTTP and the client disagree: $found"
call 404 "$API/images?component=tour-never-built&branch=main&architecture=amd64"
call 400 "$API/images?component=Hello!&branch=main&architecture=amd64"

step "an image build over HTTP (multipart), its log as plain text, its record"
tar -cf context.tar hello.txt
accepted=$(call 202 -F dockerfile=@Dockerfile -F context=@context.tar -F component=hello -F branch=main \
    -F architecture=amd64 -F 'buildArgs={"GREETING":"hey"}' "$API/images")
BUILD=$(field buildId <<< "$accepted")
[ -n "$BUILD" ] || fail "no buildId in $accepted"
curl -sS -N -H "Authorization: Bearer $KEY" "$API/builds/$BUILD/logs?format=text"
status=$(call 200 "$API/builds/$BUILD" | field status)
[ "$status" = succeeded ] || fail "build $BUILD $status"

step "?wait answers with the final record; another branch leaves main's image alone"
main=$(call 200 "$API/images?component=hello&branch=main&architecture=amd64" | field digest)
record=$(call 200 -H 'Content-Type: application/json' "$API/images?wait=300" \
    -d '{"dockerfile":"FROM busybox\nRUN true\n","component":"hello","branch":"json","architecture":"amd64"}')
[ "$(field status <<< "$record")" = succeeded ] || fail "the JSON build: $record"
[ "$(call 200 "$API/images?component=hello&branch=main&architecture=amd64" | field digest)" = "$main" ] \
    || fail "main's image moved"

step "the component over HTTP: looked up, downloaded, its digest checked"
found=$(call 200 "$API/components?component=hello-component&tag=v1.0.0&architecture=amd64")
digest=$(field digest <<< "$found")
curl -sSf -H "Authorization: Bearer $KEY" -o hello-component.tar.gz "$(field downloadUrl <<< "$found")"
[ "sha256:$(sha256sum hello-component.tar.gz | cut -d' ' -f1)" = "$digest" ] || fail "digest mismatch"
tar -tzf hello-component.tar.gz

step "a read key limited to one component sees that one only"
created=$(call 201 -H 'Content-Type: application/json' "$API/keys" \
    -d '{"name":"tour-reader","scopes":["read"],"components":["hello-component"]}')
reader=$(field secret <<< "$created")
curl -sSf -o /dev/null -H "Authorization: Bearer $reader" \
    "$API/components?component=hello-component&tag=v1.0.0&architecture=amd64"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $reader" \
    "$API/images?component=hello&branch=main&architecture=amd64")
[ "$status" = 403 ] || fail "the reader saw another component's image ($status)"

step "over NATS (examples/nats_request.py): what the tour built is found; a 404 and a 403 exit 1"
if python3 -c 'import nats' 2> /dev/null; then
    nats_request() { python3 "$EXAMPLES/nats_request.py" "$@"; }
    # A request sent while nats-server reloads its users (a key was just made) may reach no one: the README
    # says to send it again, so this does, a few times, when nothing answered.
    nats_found() {
        local stderr
        for _ in $(seq 5); do
            stderr=$(mktemp)
            if ARTIFACTS_KEY=$KEY nats_request "$@" 2> "$stderr"; then rm -f "$stderr"; return 0; fi
            cat "$stderr" >&2
            grep -q "^no answer from" "$stderr" || { rm -f "$stderr"; fail "nats_request.py $*"; }
            rm -f "$stderr"
            sleep 0.5
        done
        fail "nats_request.py $*: no answer"
    }
    nats_found artifacts.image.get '{"component":"hello","branch":"main","architecture":"amd64"}'
    nats_found --download "$work/hello-nats.tar.gz" '{"component":"hello-component","tag":"v1.0.0","architecture":"amd64"}'
    cmp hello-nats.tar.gz hello-component.tar.gz || fail "NATS and HTTP gave different archives"
    # expect_failure CODE KEY PAYLOAD: the lookup exits 1 and says CODE. A key just made may need a moment
    # (nats-server reloads its users), so a failure to connect or to reach anyone is tried again.
    expect_failure() {
        local code=$1 key=$2 payload=$3 exit_status=0 stderr=
        for _ in $(seq 20); do
            exit_status=0
            stderr=$(ARTIFACTS_KEY=$key nats_request artifacts.image.get "$payload" 2>&1 > /dev/null) || exit_status=$?
            [ "$exit_status" = 1 ] && grep -q "Nats-Service-Error-Code: $code" <<< "$stderr" && break
            sleep 0.5
        done
        echo "$stderr"
        [ "$exit_status" = 1 ] || fail "nats_request.py exited $exit_status for a $code: $stderr"
        grep -q "Nats-Service-Error-Code: $code" <<< "$stderr" || fail "nats_request.py did not say $code: $stderr"
    }
    expect_failure 404 "$KEY" '{"component":"tour-never-built","branch":"main","architecture":"amd64"}'
    expect_failure 403 "$reader" '{"component":"hello","branch":"main","architecture":"amd64"}'
    echo "nats: found, downloaded, 404 and 403 as the README says"
else
    echo "(nats-py is not installed for python3: skipping the NATS step; pip install nats-py)"
fi
call 200 -X DELETE "$API/keys/$(field keyId <<< "$created")" > /dev/null

step "keys and the collector (admin keys)"
artifacts keys list
artifacts gc --dry-run

cd /
rm -rf "$work"
printf '\ntour: every step answered as the README says\n'
