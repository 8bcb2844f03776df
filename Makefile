# The quick start: `make train` (set up, prepare Flickr8k, train) and `make test`.
# Everything runs in .venv; SHARED points at the data folder next to the clone.
PYTHON ?= python3
SHARED ?= ../shared
VENV := .venv
PY := $(VENV)/bin/python
EPOCHS ?= 100

.PHONY: setup train test lasagne-suite data clean-venv

$(VENV)/.installed: setup.py
	@scripts/install-blas.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools<81" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import lasagne_caption, theano, lasagne; print('lasagne-caption ready: theano', theano.__version__, 'BLAS:', theano.config.blas__ldflags or 'none')"
	touch $@

# the image encoder's weights where caption looks by default: linked from SHARED
# when it has them (nothing is downloaded); otherwise say where to get them
MOBILENET := mobilenet_v2_1.0_224_quant.tflite
SHARED_MOBILENET := $(SHARED)/models/mobilenet_v2/$(MOBILENET)

setup: $(VENV)/.installed
	@target=$$($(PY) -c "from lasagne_caption.encoders import default_model_path; print(default_model_path())"); \
	if [ -e "$$target" ]; then :; \
	elif [ -f "$(SHARED_MOBILENET)" ]; then \
	  mkdir -p "$$(dirname "$$target")" && ln -s "$$(cd "$$(dirname "$(SHARED_MOBILENET)")" && pwd)/$(MOBILENET)" "$$target" && \
	  echo "linked the MobileNetV2 weights: $$target -> $(SHARED_MOBILENET)"; \
	else \
	  echo "no MobileNetV2 weights at $$target: see README (Image encoders) to fetch $(MOBILENET)"; \
	fi

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
	$(PY) -m pip install --quiet -e ".[test,bench,dask]"
	touch $@

# PyPI Lasagne 0.1's own tests (lasagne/tests of its sdist, downloaded once into
# .venv) run against the compat layer: tests_lasagne/conftest.py, linked beside
# them, imports lasagne_caption first and skips what needs Theano's CUDA backend
LASAGNE_SUITE := $(VENV)/lasagne-0.1
LASAGNE_SDIST_SHA256 := 3c634ecab67e43e4f18520932bfd88bd3c678ec723c48177f18799dab2411233
LASAGNE_SUITE_PYTEST := $(PY) -m pytest $(LASAGNE_SUITE)/lasagne/tests -q -p no:cacheprovider --disable-warnings

# the project's tests and the docstring examples of every module, then Lasagne
# 0.1's own suite; both run, either failing fails
PROJECT_PYTEST := $(PY) -m pytest tests lasagne_caption --doctest-modules -q -p no:cacheprovider

test: $(VENV)/.bench-installed $(LASAGNE_SUITE)/.ready
	@status=0; \
	echo "$(PROJECT_PYTEST)"; \
	$(PROJECT_PYTEST) || status=1; \
	echo "$(LASAGNE_SUITE_PYTEST)"; \
	$(LASAGNE_SUITE_PYTEST) || status=1; \
	exit $$status

lasagne-suite: $(LASAGNE_SUITE)/.ready
	$(LASAGNE_SUITE_PYTEST)

$(LASAGNE_SUITE)/Lasagne-0.1.tar.gz: | $(VENV)/.installed
	rm -rf $(@D)/download && mkdir -p $(@D)/download
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation "lasagne==0.1" -d $(@D)/download
	echo "$(LASAGNE_SDIST_SHA256)  $$(ls $(@D)/download/*.tar.gz)" | sha256sum --check --quiet
	mv $(@D)/download/*.tar.gz $@ && rmdir $(@D)/download

$(LASAGNE_SUITE)/.ready: $(LASAGNE_SUITE)/Lasagne-0.1.tar.gz
	rm -rf $(LASAGNE_SUITE)/lasagne
	tar -xzf $< -C $(LASAGNE_SUITE) --strip-components=1 Lasagne-0.1/lasagne/tests
	ln -sfn ../../tests_lasagne/conftest.py $(LASAGNE_SUITE)/conftest.py
	touch $@

clean-venv:
	rm -rf $(VENV)
