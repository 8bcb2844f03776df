# The quick start: `make train` (set up, prepare Flickr8k, train) and `make test`.
# Everything runs in .venv; SHARED points at the data folder next to the clone.
PYTHON ?= python3
SHARED ?= ../shared
VENV := .venv
PY := $(VENV)/bin/python
EPOCHS ?= 100

.PHONY: setup train test data clean-venv

$(VENV)/.installed: setup.py
	@scripts/install-blas.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools<81" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import lasagne_caption, theano, lasagne; print('lasagne-caption ready: theano', theano.__version__, 'BLAS:', theano.config.blas__ldflags or 'none')"
	touch $@

setup: $(VENV)/.installed

data/flickr8k/image_codes.npy: | $(VENV)/.installed
	@if [ -d "$(SHARED)/data/flickr8k" ]; then \
	  $(PY) -m lasagne_caption.data prepare flickr8k --source $(SHARED)/data/flickr8k --out data/flickr8k; \
	else \
	  $(PY) -m lasagne_caption.data download flickr8k --out data/flickr8k; \
	fi

data: data/flickr8k/image_codes.npy

train: setup data
	$(PY) -m lasagne_caption.train --epochs $(EPOCHS)

# the tests also check the PyTorch peer of the benchmark: the bench extra (CPU torch)
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $@

test: $(VENV)/.bench-installed
	$(PY) -m pytest tests -q -p no:cacheprovider

clean-venv:
	rm -rf $(VENV)
