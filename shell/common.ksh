# common.ksh: "pairing" of the deliverable with its environment (sourced by the launchers).
# POSIX sh, so it runs under ksh (as Control-M starts it), bash or dash alike.
# - APP_HOME: the deliverable's root (the directory above shell/), overridable.
# - PARM_DIR: its parm/ directory (wa7_conf.ini, wa7.env, logging.conf), overridable.
# - $PARM_DIR/wa7.fonctions.env, the seed's shell environment (exported variables,
#   functions, proxies, PYTHON...), is sourced (`. file`) when present, before the virtual
#   environment is prepared and the run starts; its absence is fine.
# - the Python virtual environment MATOMO_KAFKA_VENV (default $APP_HOME/.venv): created and
#   filled from the deliverable on first use, then only activated.

APP_HOME=${APP_HOME:-$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)}
PARM_DIR=${PARM_DIR:-$APP_HOME/parm}
MATOMO_KAFKA_VENV=${MATOMO_KAFKA_VENV:-$APP_HOME/.venv}
PYTHON=${PYTHON:-python3}
export APP_HOME PARM_DIR MATOMO_KAFKA_VENV

log_line() {
    printf '%s %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "${JOB_NAME:-matomo-kafka}" "$*"
}

FONCTIONS_ENV=$PARM_DIR/wa7.fonctions.env
if [ -e "$FONCTIONS_ENV" ]; then
    if [ ! -r "$FONCTIONS_ENV" ]; then
        log_line "cannot read $FONCTIONS_ENV (exit 4)"
        exit 4
    fi
    . "$FONCTIONS_ENV"
fi

if [ ! -x "$MATOMO_KAFKA_VENV/bin/matomo-kafka" ]; then
    log_line "creating $MATOMO_KAFKA_VENV from $APP_HOME"
    "$PYTHON" -m venv "$MATOMO_KAFKA_VENV" &&
        "$MATOMO_KAFKA_VENV/bin/python" -m pip install -q "$APP_HOME" || {
        log_line "cannot create the virtual environment (exit 4)"
        exit 4
    }
fi
PATH=$MATOMO_KAFKA_VENV/bin:$PATH
export PATH
