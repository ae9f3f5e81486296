# The two commands the README promises. Everything else is in infra/.
.PHONY: demo test
demo:
	bash infra/demo.sh
test:
	bash infra/test.sh
