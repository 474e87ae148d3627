# Sourced by generators.sbatch and train.sbatch (not a job of its own).
#
# wirehead_cache_uri: unless WIREHEAD_MONGO_URI is set already (a server you run yourself), wait up to
# ADDRESS_TIMEOUT seconds for the "host:port" that mongodb.sbatch publishes in $WIREHEAD_SHARED/mongodb.address
# and export WIREHEAD_MONGO_URI for it, with the credentials of the server job: $WIREHEAD_MONGO_USERNAME /
# $WIREHEAD_MONGO_PASSWORD when you exported them before sbatch, else the ones the server job generated into
# $WIREHEAD_SHARED/mongodb.credentials (mode 0600: only you can read it).  Exits 2 when no address comes.

wirehead_cache_uri() {
    [ -n "${WIREHEAD_MONGO_URI:-}" ] && return 0
    local address_file="$WIREHEAD_SHARED/mongodb.address" cred_file="$WIREHEAD_SHARED/mongodb.credentials"
    local waited=0 user="${WIREHEAD_MONGO_USERNAME:-}" password="${WIREHEAD_MONGO_PASSWORD:-}" auth=""
    until [ -s "$address_file" ]; do
        waited=$((waited + 1))
        if [ "$waited" -gt "${ADDRESS_TIMEOUT:-1800}" ]; then
            echo "no $address_file after ${ADDRESS_TIMEOUT:-1800} s: is the MongoDB job (mongodb.sbatch) running?" >&2
            exit 2
        fi
        sleep 1
    done
    if [ -z "$user" ] && [ -s "$cred_file" ]; then
        { read -r user; read -r password; } < "$cred_file"
    fi
    if [ -n "$user" ]; then
        # percent-encoded by Python, passed through the environment (never on a command line)
        auth="$(WH_U="$user" WH_P="$password" python -c 'import os, urllib.parse as u
print(u.quote_plus(os.environ["WH_U"]) + ":" + u.quote_plus(os.environ["WH_P"]) + "@")')"
        export WIREHEAD_MONGO_URI="mongodb://${auth}$(cat "$address_file")/?authSource=admin"
    else
        export WIREHEAD_MONGO_URI="mongodb://$(cat "$address_file")/"
    fi
}
