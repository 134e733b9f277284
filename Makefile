# Shortcuts for the two commands of the README; the build itself is CMake's.
.PHONY: demo test
demo:
	./demo
test:
	./test
