# sts3d: `make demo` runs the main job, `make test` the test suite; both create .venv first when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install only when the dependency lists change.
STAMP := $(VENV)/.sts3d-installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "sts3d needs Python 3.10 or newer; set PYTHON=python3.x" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -e .
	@touch $@

# The main job (docs/main_job.md): synthetic data, image pre-training of X3D-S, fine-tuning with STS and the two
# comparison runs, multi-view tests, work_dirs/demo/summary.json and summary.png. Resumes; add ARGS=--fresh to
# start clean.
demo: venv
	$(PY) -m sts3d.tools.main_job $(ARGS)

test: venv
	$(PY) -m pytest -q

# Every bench/*.py script, one after the other (each takes its own options; see its docstring), except
# cuda_layer.py: a program for Nsight to profile, which needs a layer shape and times nothing itself.
bench: venv
	@found=0; for script in bench/*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		[ "$$script" = bench/cuda_layer.py ] && continue; \
		echo "== $$script"; $(PY) "$$script" || exit 1; \
	done; [ $$found = 1 ] || echo "no bench scripts yet (bench/*.py)"

clean:
	rm -rf .pytest_cache build dist
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
