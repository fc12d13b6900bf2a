"""Renders chat-template cases with Jinja2 (Debian's python3-jinja2) set up as Hugging Face transformers renders chat
templates — the same environment as ../shared/data/chat-templates/render_templates.py — as the reference for
src/chat/jinja.cpp. Usage: /usr/bin/python3 jinja_reference.py CASES.json OUT.json, CASES = [{source, variables}];
OUT = [{output} | {error}]. strftime_now is fixed to 2026-12-08."""
import datetime, json, sys
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.exceptions import TemplateError


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: datetime.datetime(2026, 12, 8).strftime(fmt)
out = []
for case in json.load(open(sys.argv[1])):
    try:
        out.append({"output": env.from_string(case["source"]).render(**case["variables"])})
    except Exception as e:  # what a renderer must also refuse: any Jinja2 or Python error
        out.append({"error": f"{type(e).__name__}: {e}"})
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False)
