# Template text has long lines, as chat templates do.
# ruff: noqa: E501
"""One chat template per tool-call family mlxserve serves, written for the tests from each
family's documented prompt format (its special tokens, turn markers, call and result syntax,
reasoning markers). They are not the models' own files: they render what the tests need to see
(tools, past calls, tool results, system turns, reasoning, the generation prompt) in the
family's syntax, and use the Jinja features the real templates of these families rely on
(`tojson` with json.dumps' keywords, `arguments|items`, list `.append`, `{% do %}`, `{% break %}`).

Every template reads OpenAI-shaped messages: `{"role", "content"}`, an assistant's
`tool_calls` (`{"id", "type": "function", "function": {"name", "arguments"}}`) with an optional
`reasoning_content`, and `{"role": "tool", "tool_call_id", "content"}` results; `tools` in the
chat completions shape; `add_generation_prompt`, `enable_thinking` and `reasoning_effort`.

FAMILY_TEMPLATES: name -> template; FAMILY_SPECIALS: name -> its special tokens;
FAMILY_BOS_EOS: name -> (bos, eos); GENERATION_PROMPTS: name -> how a prompt that ends after a
user turn ends (with the template's defaults).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    template: str
    specials: tuple[str, ...]
    bos: str
    eos: str
    generation_prompt: str  # the end of a prompt whose last message is a user turn


# Shared pieces of Jinja: the index of the last user turn (reasoning after it belongs to the
# reply in progress and is kept; earlier turns' reasoning is dropped), and a call's arguments.
LAST_USER = r"""{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}
{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
"""

HERMES = (
    LAST_USER
    + r"""
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if first_system -%}{{- messages[0].content + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nThese functions can be called; their signatures, as JSON, are inside <tools></tools>:\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nTo call functions, write each call as a JSON object with "name" and "arguments" in its own <tool_call></tool_call> block:\n<tool_call>\n{"name": <function-name>, "arguments": <arguments-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif first_system -%}
{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>\n' + message.reasoning_content.strip() + '\n</think>\n\n' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{%- if loop.first and message.content -%}{{- '\n' -}}{%- elif not loop.first -%}{{- '\n' -}}{%- endif -%}
{{- '<tool_call>\n{"name": "' + function.name + '", "arguments": ' -}}
{%- if function.arguments is string -%}{{- function.arguments -}}{%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}
{%- endif -%}
"""
)

QWEN3_CODER = (
    LAST_USER
    + r"""
{%- macro value(v) -%}{%- if v is string -%}{{- v -}}{%- else -%}{{- v | tojson -}}{%- endif -%}{%- endmacro -%}
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if first_system or tools -%}
{{- '<|im_start|>system\n' -}}
{%- if first_system -%}{{- messages[0].content -}}{%- endif -%}
{%- if tools -%}
{%- if first_system -%}{{- '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nThese functions are available:\n\n<tools>' -}}
{%- for tool in tools -%}
{%- set t = tool.function if tool.function is defined else tool -%}
{{- '\n<function>\n<name>' + t.name + '</name>' -}}
{%- if t.description -%}{{- '\n<description>' + t.description + '</description>' -}}{%- endif -%}
{{- '\n<parameters>' -}}
{%- set schema = t.parameters or {} -%}
{%- for pname, p in (schema.properties or {}) | items -%}
{{- '\n<parameter>\n<name>' + pname + '</name>' -}}
{%- if p.type -%}{{- '\n<type>' + value(p.type) + '</type>' -}}{%- endif -%}
{%- if p.description -%}{{- '\n<description>' + p.description + '</description>' -}}{%- endif -%}
{%- if p.enum -%}{{- '\n<enum>' + (p.enum | tojson) + '</enum>' -}}{%- endif -%}
{{- '\n</parameter>' -}}
{%- endfor -%}
{%- if schema.required -%}{{- '\n<required>' + (schema.required | tojson) + '</required>' -}}{%- endif -%}
{{- '\n</parameters>\n</function>' -}}
{%- endfor -%}
{{- '\n</tools>\n\nTo call a function, reply with one block per call, and nothing after the last:\n\n<tool_call>\n<function=function_name>\n<parameter=parameter_name>\nvalue\n</parameter>\n</function>\n</tool_call>\n\nValues that span lines are written as they are; give every required parameter.' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>\n' + message.reasoning_content.strip() + '\n</think>\n\n' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{%- if loop.first and message.content -%}{{- '\n\n' -}}{%- elif not loop.first -%}{{- '\n' -}}{%- endif -%}
{{- '<tool_call>\n<function=' + function.name + '>\n' -}}
{%- for name, arg in function.arguments | items -%}
{{- '<parameter=' + name + '>\n' + value(arg) + '\n</parameter>\n' -}}
{%- endfor -%}
{{- '</function>\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user\n' -}}{%- endif -%}
{{- '<tool_response>\n' + message.content + '\n</tool_response>\n' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\n\n</think>\n\n' -}}{%- else -%}{{- '<think>\n' -}}{%- endif -%}
{%- endif -%}
"""
)

GLM47 = (
    LAST_USER
    + r"""
{%- macro value(v) -%}{%- if v is string -%}{{- v -}}{%- else -%}{{- v | tojson(ensure_ascii=False) -}}{%- endif -%}{%- endmacro -%}
{{- '[gMASK]<sop>' -}}
{%- if tools -%}
{{- '<|system|>\n# Tools\n\nYou can call the functions below, described as JSON in <tools></tools>:\n<tools>\n' -}}
{%- for tool in tools -%}{{- (tool | tojson(ensure_ascii=False)) + '\n' -}}{%- endfor -%}
{{- '</tools>\n\nWrite each call as the function name followed by its arguments as key and value pairs:\n<tool_call>{function-name}<arg_key>{key}</arg_key><arg_value>{value}</arg_value></tool_call>' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{{- '<|system|>\n' + message.content -}}
{%- elif message.role == 'user' -%}
{{- '<|user|>\n' + message.content -}}
{%- elif message.role == 'assistant' -%}
{{- '<|assistant|>' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>' + message.reasoning_content.strip() + '</think>' -}}
{%- else -%}
{{- '<think></think>' -}}
{%- endif -%}
{{- (message.content or '').strip() -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '<tool_call>' + function.name -}}
{%- for key, arg in function.arguments | items -%}
{{- '<arg_key>' + key + '</arg_key><arg_value>' + value(arg) + '</arg_value>' -}}
{%- endfor -%}
{{- '</tool_call>' -}}
{%- endfor -%}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|observation|>' -}}{%- endif -%}
{{- '<tool_response>' + message.content + '</tool_response>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|assistant|>' -}}
{%- if enable_thinking is defined and not enable_thinking -%}{{- '</think>' -}}{%- else -%}{{- '<think>' -}}{%- endif -%}
{%- endif -%}
"""
)

# Gemma 4: values in its own notation (strings between <|"|> tokens, bare keys), tool results
# inside the model's turn after its calls (<|tool_response> also ends a reply), thinking on with
# <|think|> at the start of the system turn.
GEMMA4 = (
    LAST_USER
    + r"""
{%- macro g(v) -%}
{%- if v is none -%}null
{%- elif v is boolean -%}{{- 'true' if v else 'false' -}}
{%- elif v is string -%}{{- '<|"|>' + v + '<|"|>' -}}
{%- elif v is mapping -%}{{- '{' -}}{%- for key, item in v | items -%}{{- key + ':' + g(item) -}}{%- if not loop.last -%},{%- endif -%}{%- endfor -%}{{- '}' -}}
{%- elif v is iterable -%}{{- '[' -}}{%- for item in v -%}{{- g(item) -}}{%- if not loop.last -%},{%- endif -%}{%- endfor -%}{{- ']' -}}
{%- else -%}{{- v -}}
{%- endif -%}
{%- endmacro -%}
{%- macro called(id) -%}
{%- for m in messages -%}{%- for call in m.tool_calls or [] -%}
{%- if call.id == id -%}{{- (call.function if call.function is defined else call).name -}}{%- endif -%}
{%- endfor -%}{%- endfor -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set thinking = enable_thinking is defined and enable_thinking -%}
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if first_system or tools or thinking -%}
{{- '<|turn>system\n' -}}
{%- if thinking -%}{{- '<|think|>' -}}{%- endif -%}
{%- if first_system -%}{{- messages[0].content -}}{%- endif -%}
{%- for tool in tools or [] -%}
{%- set t = tool.function if tool.function is defined else tool -%}
{{- '<|tool>declaration:' + t.name + '{description:' + g(t.description or '') + ',parameters:' + g(t.parameters or {}) + '}<tool|>' -}}
{%- endfor -%}
{{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|turn>system\n' + message.content + '<turn|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|turn>user\n' + message.content + '<turn|>\n' -}}
{%- elif message.role == 'assistant' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|turn>model\n' -}}{%- endif -%}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<|channel>thought\n' + message.reasoning_content.strip() + '<channel|>' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '<|tool_call>call:' + function.name + g(function.arguments) + '<tool_call|>' -}}
{%- endfor -%}
{%- if not message.tool_calls -%}{{- '<turn|>\n' -}}{%- endif -%}
{%- elif message.role == 'tool' -%}
{{- '<|tool_response>response:' + called(message.tool_call_id) + '{value:' + g(message.content) + '}<tool_response|>' -}}
{%- if not loop.last and messages[loop.index0 + 1].role not in ['tool', 'assistant'] -%}{{- '<turn|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and (not messages or messages[-1].role != 'tool') -%}
{{- '<|turn>model\n' -}}
{%- endif -%}
"""
)

# Kimi K2: call ids are `functions.NAME:INDEX`; an id the client made up is shown as the one the
# model would have written, remembered (in lists the template appends to) for its result.
KIMI_K2 = (
    LAST_USER
    + r"""
{%- set client_ids = [] -%}
{%- set shown_ids = [] -%}
{%- if tools -%}
{{- '<|im_system|>tool_declare<|im_middle|>' + (tools | tojson(separators=(',', ':'))) + '<|im_end|>' -}}
{%- endif -%}
{%- if not messages or messages[0].role != 'system' -%}
{{- '<|im_system|>system<|im_middle|>You are a helpful assistant.<|im_end|>' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{{- '<|im_system|>system<|im_middle|>' + message.content + '<|im_end|>' -}}
{%- elif message.role == 'user' -%}
{{- '<|im_user|>user<|im_middle|>' + message.content + '<|im_end|>' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_assistant|>assistant<|im_middle|>' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>' + message.reasoning_content.strip() + '</think>' -}}
{%- else -%}
{{- '<think></think>' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- if message.tool_calls -%}
{{- '<|tool_calls_section_begin|>' -}}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{%- if call.id and call.id.startswith('functions.') -%}
{%- set shown = call.id -%}
{%- else -%}
{%- set shown = 'functions.' + function.name + ':' + (shown_ids | length | string) -%}
{%- endif -%}
{%- do client_ids.append(call.id) -%}
{%- set _ = shown_ids.append(shown) -%}
{{- '<|tool_call_begin|>' + shown + '<|tool_call_argument_begin|>' -}}
{%- if function.arguments is string -%}{{- function.arguments -}}{%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
{{- '<|tool_call_end|>' -}}
{%- endfor -%}
{{- '<|tool_calls_section_end|>' -}}
{%- endif -%}
{{- '<|im_end|>' -}}
{%- elif message.role == 'tool' -%}
{%- set found = namespace(id=message.tool_call_id) -%}
{%- for i in range(client_ids | length) -%}
{%- if client_ids[i] == message.tool_call_id -%}{%- set found.id = shown_ids[i] -%}{%- break -%}{%- endif -%}
{%- endfor -%}
{{- '<|im_system|>tool<|im_middle|>## Return of ' + found.id + '\n' + message.content + '<|im_end|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_assistant|>assistant<|im_middle|>' -}}{%- endif -%}
"""
)

MINIMAX_M2 = (
    LAST_USER
    + r"""
{%- macro value(v) -%}{%- if v is string -%}{{- v -}}{%- else -%}{{- v | tojson(ensure_ascii=False) -}}{%- endif -%}{%- endmacro -%}
{{- ']~!b[]~b]system\n' -}}
{%- if messages and messages[0].role == 'system' -%}{{- messages[0].content -}}{%- else -%}{{- 'You are a helpful assistant.' -}}{%- endif -%}
{%- if tools -%}
{{- '\n\n# Tools\nThe tools you can call, as JSON Schema:\n\n<tools>\n' -}}
{%- for tool in tools -%}
{{- '<tool>' + ((tool.function if tool.function is defined else tool) | tojson(ensure_ascii=False)) + '</tool>\n' -}}
{%- endfor -%}
{{- '</tools>\n\nCall tools in this XML form, one <invoke> per call:\n<minimax:tool_call>\n<invoke name="tool-name">\n<parameter name="parameter-name">value</parameter>\n</invoke>\n</minimax:tool_call>' -}}
{%- endif -%}
{{- '[e~[\n' -}}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- ']~b]system\n' + message.content + '[e~[\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- ']~b]user\n' + message.content + '[e~[\n' -}}
{%- elif message.role == 'assistant' -%}
{{- ']~b]ai\n' -}}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>\n' + message.reasoning_content.strip() + '\n</think>\n\n' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- if message.tool_calls -%}
{{- '\n<minimax:tool_call>\n' -}}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '<invoke name="' + function.name + '">\n' -}}
{%- for key, arg in function.arguments | items -%}
{{- '<parameter name="' + key + '">' + value(arg) + '</parameter>\n' -}}
{%- endfor -%}
{{- '</invoke>\n' -}}
{%- endfor -%}
{{- '</minimax:tool_call>' -}}
{%- endif -%}
{{- '[e~[\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- ']~b]tool' -}}{%- endif -%}
{{- '\n<response>' + message.content + '</response>' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '[e~[\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- ']~b]ai\n<think>\n' -}}{%- endif -%}
"""
)

# DeepSeek V3.1: every system message goes to the top; a call's arguments are joined to the
# prompt with `+`, as DeepSeek's own templates do (they need the arguments' JSON text).
DEEPSEEK = (
    LAST_USER
    + r"""
{%- set think = (thinking is defined and thinking) or (enable_thinking is defined and enable_thinking) -%}
{%- set top = namespace(text='', after_tool=false) -%}
{%- for m in messages if m.role == 'system' -%}
{%- set top.text = top.text + ('\n\n' if top.text else '') + m.content -%}
{%- endfor -%}
{{- bos_token + top.text -}}
{%- if tools -%}
{{- '\n\n## Tools\nThese tools are available:\n' -}}
{%- for tool in tools -%}
{%- set t = tool.function if tool.function is defined else tool -%}
{{- '\n### ' + t.name + '\nDescription: ' + (t.description or '') + '\n\nParameters: ' + ((t.parameters or {}) | tojson) + '\n' -}}
{%- endfor -%}
{{- '\nTo use tools, write exactly:\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_name<｜tool▁sep｜>json_arguments<｜tool▁call▁end｜>{more calls}<｜tool▁calls▁end｜>\nwith each call right after the one before.\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'user' -%}
{{- '<｜User｜>' + message.content -}}
{%- set top.after_tool = false -%}
{%- elif message.role == 'assistant' -%}
{%- if not top.after_tool -%}{{- '<｜Assistant｜>' -}}{%- endif -%}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<think>' + message.reasoning_content + '</think>' -}}
{%- elif not top.after_tool -%}
{{- '</think>' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- if message.tool_calls -%}
{{- '<｜tool▁calls▁begin｜>' -}}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '<｜tool▁call▁begin｜>' + function.name + '<｜tool▁sep｜>' + function.arguments + '<｜tool▁call▁end｜>' -}}
{%- endfor -%}
{{- '<｜tool▁calls▁end｜>' -}}
{%- endif -%}
{{- '<｜end▁of▁sentence｜>' -}}
{%- set top.after_tool = false -%}
{%- elif message.role == 'tool' -%}
{{- '<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' -}}
{%- set top.after_tool = true -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not top.after_tool -%}
{{- '<｜Assistant｜>' + ('<think>' if think else '</think>') -}}
{%- endif -%}
"""
)

# LFM2: tools listed as JSON in the system turn, calls as a Python list of calls.
PYTHONIC = r"""
{%- macro py(v) -%}
{%- if v is none -%}None
{%- elif v is boolean -%}{{- 'True' if v else 'False' -}}
{%- elif v is string or v is mapping or (v is iterable) -%}{{- v | tojson(ensure_ascii=False) -}}
{%- else -%}{{- v -}}
{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if first_system or tools -%}
{{- '<|im_start|>system\n' -}}
{%- if first_system -%}{{- messages[0].content -}}{%- endif -%}
{%- if tools -%}
{%- if first_system -%}{{- '\n' -}}{%- endif -%}
{{- 'List of tools: <|tool_list_start|>[' -}}
{%- for tool in tools -%}{{- ((tool.function if tool.function is defined else tool) | tojson(ensure_ascii=False)) + (', ' if not loop.last else '') -}}{%- endfor -%}
{{- ']<|tool_list_end|>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- if message.tool_calls -%}
{{- '<|tool_call_start|>[' -}}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- function.name + '(' -}}
{%- for key, arg in function.arguments | items -%}{{- key + '=' + py(arg) + (', ' if not loop.last else '') -}}{%- endfor -%}
{{- ')' + (', ' if not loop.last else '') -}}
{%- endfor -%}
{{- ']<|tool_call_end|>' -}}
{%- endif -%}
{{- (message.content or '') + '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>tool\n<|tool_response_start|>' + message.content + '<|tool_response_end|><|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Devstral / Magistral: the prompt ends after [/INST] (or a [/TOOL_RESULTS]); there is no
# separate generation prompt.
MISTRAL = (
    LAST_USER
    + r"""
{{- bos_token -}}
{%- if messages and messages[0].role == 'system' -%}
{{- '[SYSTEM_PROMPT]' + messages[0].content + '[/SYSTEM_PROMPT]' -}}
{%- endif -%}
{%- if tools -%}{{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' -}}{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '[SYSTEM_PROMPT]' + message.content + '[/SYSTEM_PROMPT]' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '[INST]' + message.content + '[/INST]' -}}
{%- elif message.role == 'assistant' -%}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '[THINK]' + message.reasoning_content + '[/THINK]' -}}
{%- endif -%}
{{- message.content or '' -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '[TOOL_CALLS]' + function.name + '[ARGS]' -}}
{%- if function.arguments is string -%}{{- function.arguments -}}{%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
{%- endfor -%}
{{- eos_token -}}
{%- elif message.role == 'tool' -%}
{{- '[TOOL_RESULTS]' + message.content + '[/TOOL_RESULTS]' -}}
{%- else -%}
{{- raise_exception('roles are system, user, assistant and tool') -}}
{%- endif -%}
{%- endfor -%}
"""
)

# gpt-oss: a system message (identity, date, reasoning effort, channels), a developer message
# with the instructions and the tools as a TypeScript-like `functions` namespace; reasoning on
# the analysis channel, only for the reply in progress.
HARMONY = (
    LAST_USER
    + r"""
{%- macro ts_type(p) -%}
{%- if p.enum -%}
{%- for option in p.enum -%}{{- option | tojson -}}{%- if not loop.last -%}{{- ' | ' -}}{%- endif -%}{%- endfor -%}
{%- elif p.type is defined and p.type is not string and p.type is iterable -%}
{%- for kind in p.type -%}{{- ts_type({'type': kind}) -}}{%- if not loop.last -%}{{- ' | ' -}}{%- endif -%}{%- endfor -%}
{%- elif p.type == 'string' -%}string
{%- elif p.type in ['integer', 'number'] -%}number
{%- elif p.type == 'boolean' -%}boolean
{%- elif p.type == 'null' -%}null
{%- elif p.type == 'array' -%}{{- (ts_type(p['items']) if p['items'] is mapping else 'any') + '[]' -}}
{%- elif p.type == 'object' -%}Record<string, any>
{%- else -%}any
{%- endif -%}
{%- endmacro -%}
{%- macro called(id) -%}
{%- for m in messages -%}{%- for call in m.tool_calls or [] -%}
{%- if call.id == id -%}{{- (call.function if call.function is defined else call).name -}}{%- endif -%}
{%- endfor -%}{%- endfor -%}
{%- endmacro -%}
{%- if reasoning_effort is defined and reasoning_effort in ['low', 'medium', 'high'] -%}
{%- set effort = reasoning_effort -%}
{%- elif reasoning_effort is defined and reasoning_effort in ['none', 'minimal'] -%}
{%- set effort = 'low' -%}
{%- else -%}
{%- set effort = 'medium' -%}
{%- endif -%}
{{- '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: ' + strftime_now('%Y-%m-%d') + '\n\nReasoning: ' + effort + '\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.' -}}
{%- if tools -%}{{- "\nCalls to these tools must go to the commentary channel: 'functions'." -}}{%- endif -%}
{{- '<|end|>' -}}
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if first_system or tools -%}
{{- '<|start|>developer<|message|>' -}}
{%- if first_system -%}{{- '# Instructions\n\n' + messages[0].content -}}{%- endif -%}
{%- if tools -%}
{%- if first_system -%}{{- '\n\n' -}}{%- endif -%}
{{- '# Tools\n\n## functions\n\nnamespace functions {\n\n' -}}
{%- for tool in tools -%}
{%- set t = tool.function if tool.function is defined else tool -%}
{%- if t.description -%}{{- '// ' + t.description + '\n' -}}{%- endif -%}
{{- 'type ' + t.name + ' = ' -}}
{%- set schema = t.parameters or {} -%}
{%- if schema.properties -%}
{{- '(_: {\n' -}}
{%- for pname, p in schema.properties | items -%}
{%- if p.description -%}{{- '// ' + p.description + '\n' -}}{%- endif -%}
{{- pname + ('' if pname in (schema.required or []) else '?') + ': ' + ts_type(p) + ',' -}}
{%- if p.default is defined -%}{{- ' // default: ' + (p.default | tojson) -}}{%- endif -%}
{{- '\n' -}}
{%- endfor -%}
{{- '}) => any;\n\n' -}}
{%- else -%}
{{- '() => any;\n\n' -}}
{%- endif -%}
{%- endfor -%}
{{- '} // namespace functions' -}}
{%- endif -%}
{{- '<|end|>' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|start|>developer<|message|>' + message.content + '<|end|>' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|start|>user<|message|>' + message.content + '<|end|>' -}}
{%- elif message.role == 'assistant' -%}
{%- if message.reasoning_content and loop.index0 > ns.last_user -%}
{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.reasoning_content + '<|end|>' -}}
{%- endif -%}
{%- if message.tool_calls -%}
{%- if message.content -%}{{- '<|start|>assistant<|channel|>commentary<|message|>' + message.content + '<|end|>' -}}{%- endif -%}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '<|start|>assistant<|channel|>commentary to=functions.' + function.name + ' <|constrain|>json<|message|>' -}}
{%- if function.arguments is string -%}{{- function.arguments -}}{%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
{{- '<|call|>' -}}
{%- endfor -%}
{%- else -%}
{{- '<|start|>assistant<|channel|>final<|message|>' + (message.content or '') + '<|end|>' -}}
{%- endif -%}
{%- elif message.role == 'tool' -%}
{{- '<|start|>functions.' + called(message.tool_call_id) + ' to=assistant<|channel|>commentary<|message|>' + message.content + '<|end|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start|>assistant' -}}{%- endif -%}
"""
)

# Llama 3.1-3.3: the tools are shown in the first user turn; a call is a whole reply of
# {"name", "parameters"} JSON (one per line when there are several); results are ipython turns.
LLAMA3 = r"""
{{- bos_token -}}
{%- set first_system = messages and messages[0].role == 'system' -%}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
{%- if tools -%}{{- 'Environment: ipython\n' -}}{%- endif -%}
{{- 'Cutting Knowledge Date: December 2023\nToday Date: ' + strftime_now('%d %b %Y') + '\n\n' -}}
{%- if first_system -%}{{- messages[0].content -}}{%- endif -%}
{{- '<|eot_id|>' -}}
{%- set shown = namespace(tools=false) -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- '<|start_header_id|>system<|end_header_id|>\n\n' + message.content + '<|eot_id|>' -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
{%- if tools and not shown.tools -%}
{{- 'You can call the functions below. To call one, reply with only a JSON object {"name": function name, "parameters": object of argument values}; use literal values, not variables.\n\n' -}}
{%- for tool in tools -%}{{- (tool | tojson(indent=4)) + '\n\n' -}}{%- endfor -%}
{%- set shown.tools = true -%}
{%- endif -%}
{{- message.content + '<|eot_id|>' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- if message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '{"name": "' + function.name + '", "parameters": ' -}}
{%- if function.arguments is string -%}{{- function.arguments -}}{%- else -%}{{- function.arguments | tojson -}}{%- endif -%}
{{- '}' + ('\n' if not loop.last else '') -}}
{%- endfor -%}
{%- else -%}
{{- message.content or '' -}}
{%- endif -%}
{{- '<|eot_id|>' -}}
{%- elif message.role == 'tool' -%}
{{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + message.content + '<|eot_id|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}
"""

# Gemma 3: no system turn (the first system message opens the first user turn), calls as
# ```tool_code blocks, results as ```tool_output blocks in a user turn.
GEMMA = r"""
{%- macro py(v) -%}
{%- if v is none -%}None
{%- elif v is boolean -%}{{- 'True' if v else 'False' -}}
{%- elif v is string or v is mapping or (v is iterable) -%}{{- v | tojson(ensure_ascii=False) -}}
{%- else -%}{{- v -}}
{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set lead = namespace(text='') -%}
{%- if messages and messages[0].role == 'system' -%}{%- set lead.text = messages[0].content + '\n\n' -%}{%- endif -%}
{%- if tools -%}
{%- set lead.text = lead.text + 'You can call these functions (described as JSON):\n' -%}
{%- for tool in tools -%}{%- set lead.text = lead.text + (tool | tojson) + '\n' -%}{%- endfor -%}
{%- set lead.text = lead.text + 'To call one, write a Python call in a ```tool_code block.\n\n' -%}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- if not loop.first -%}{{- raise_exception('only the first message may be a system message') -}}{%- endif -%}
{%- elif message.role == 'user' -%}
{{- '<start_of_turn>user\n' + lead.text + message.content + '<end_of_turn>\n' -}}
{%- set lead.text = '' -%}
{%- elif message.role == 'assistant' -%}
{{- '<start_of_turn>model\n' + (message.content or '') -}}
{%- for call in message.tool_calls or [] -%}
{%- set function = call.function if call.function is defined else call -%}
{{- '\n```tool_code\n' + function.name + '(' -}}
{%- for key, arg in function.arguments | items -%}{{- key + '=' + py(arg) + (', ' if not loop.last else '') -}}{%- endfor -%}
{{- ')\n```' -}}
{%- endfor -%}
{{- '<end_of_turn>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<start_of_turn>user' -}}{%- endif -%}
{{- '\n```tool_output\n' + message.content + '\n```' -}}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<end_of_turn>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""

# Any other model: ChatML turns, a call as a whole-reply JSON object.
JSON = r"""
{%- for message in messages -%}
{%- if loop.first and tools -%}
{{- '<|im_start|>system\n' -}}
{%- if message.role == 'system' -%}{{- message.content + '\n\n' -}}{%- endif -%}
{{- 'Functions you can call:\n' -}}
{%- for tool in tools -%}{{- (tool | tojson) + '\n' -}}{%- endfor -%}
{{- 'To call one, reply with only {"name": ..., "arguments": {...}}.<|im_end|>\n' -}}
{%- if message.role == 'system' -%}{%- continue -%}{%- endif -%}
{%- endif -%}
{%- if message.role == 'assistant' and message.tool_calls -%}
{{- '<|im_start|>assistant\n' -}}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{{- {'name': function.name, 'arguments': function.arguments} | tojson -}}
{{- '\n' if not loop.last else '' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + (message.content or '') + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

FAMILIES: dict[str, Family] = {
    "hermes": Family(
        HERMES,
        (
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</think>",
            "<tool_call>",
            "</tool_call>",
            "<tool_response>",
            "</tool_response>",
        ),
        "",
        "<|im_end|>",
        "<|im_start|>assistant\n",
    ),
    "qwen3_coder": Family(
        QWEN3_CODER,
        (
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</think>",
            "<tool_call>",
            "</tool_call>",
            "<tool_response>",
            "</tool_response>",
        ),
        "",
        "<|im_end|>",
        "<|im_start|>assistant\n<think>\n",
    ),
    "glm47": Family(
        GLM47,
        (
            "[gMASK]",
            "<sop>",
            "<|system|>",
            "<|user|>",
            "<|assistant|>",
            "<|observation|>",
            "<think>",
            "</think>",
            "<tool_call>",
            "</tool_call>",
            "<arg_key>",
            "</arg_key>",
            "<arg_value>",
            "</arg_value>",
            "<tool_response>",
            "</tool_response>",
            "<|endoftext|>",
        ),
        "",
        "<|endoftext|>",
        "<|assistant|><think>",
    ),
    "gemma4": Family(
        GEMMA4,
        (
            "<bos>",
            "<eos>",
            "<|turn>",
            "<turn|>",
            "<|think|>",
            "<|channel>",
            "<channel|>",
            "<|tool>",
            "<tool|>",
            "<|tool_call>",
            "<tool_call|>",
            "<|tool_response>",
            "<tool_response|>",
            '<|"|>',
        ),
        "<bos>",
        "<turn|>",
        "<|turn>model\n",
    ),
    "kimi_k2": Family(
        KIMI_K2,
        (
            "[BOS]",
            "[EOS]",
            "<|im_system|>",
            "<|im_user|>",
            "<|im_assistant|>",
            "<|im_middle|>",
            "<|im_end|>",
            "<think>",
            "</think>",
            "<|tool_calls_section_begin|>",
            "<|tool_calls_section_end|>",
            "<|tool_call_begin|>",
            "<|tool_call_argument_begin|>",
            "<|tool_call_end|>",
        ),
        "[BOS]",
        "<|im_end|>",
        "<|im_assistant|>assistant<|im_middle|>",
    ),
    "minimax_m2": Family(
        MINIMAX_M2,
        (
            "]~!b[",
            "]~b]",
            "[e~[",
            "<think>",
            "</think>",
            "<minimax:tool_call>",
            "</minimax:tool_call>",
        ),
        "]~!b[",
        "[e~[",
        "]~b]ai\n<think>\n",
    ),
    "deepseek": Family(
        DEEPSEEK,
        (
            "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>",
            "<｜User｜>",
            "<｜Assistant｜>",
            "<think>",
            "</think>",
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁calls▁end｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁sep｜>",
            "<｜tool▁output▁begin｜>",
            "<｜tool▁output▁end｜>",
        ),
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<｜Assistant｜></think>",
    ),
    "pythonic": Family(
        PYTHONIC,
        (
            "<|startoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|tool_list_start|>",
            "<|tool_list_end|>",
            "<|tool_call_start|>",
            "<|tool_call_end|>",
            "<|tool_response_start|>",
            "<|tool_response_end|>",
        ),
        "<|startoftext|>",
        "<|im_end|>",
        "<|im_start|>assistant\n",
    ),
    "mistral": Family(
        MISTRAL,
        (
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
            "[SYSTEM_PROMPT]",
            "[/SYSTEM_PROMPT]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS]",
            "[ARGS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
            "[THINK]",
            "[/THINK]",
        ),
        "<s>",
        "</s>",
        "[/INST]",
    ),
    "harmony": Family(
        HARMONY,
        (
            "<|startoftext|>",
            "<|start|>",
            "<|end|>",
            "<|message|>",
            "<|channel|>",
            "<|constrain|>",
            "<|call|>",
            "<|return|>",
        ),
        "<|startoftext|>",
        "<|return|>",
        "<|start|>assistant",
    ),
    "llama3": Family(
        LLAMA3,
        (
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ),
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma": Family(
        GEMMA,
        ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
        "<bos>",
        "<end_of_turn>",
        "<start_of_turn>model\n",
    ),
    "json": Family(
        JSON, ("<|im_start|>", "<|im_end|>"), "", "<|im_end|>", "<|im_start|>assistant\n"
    ),
}

FAMILY_TEMPLATES = {name: family.template for name, family in FAMILIES.items()}
FAMILY_SPECIALS = {name: list(family.specials) for name, family in FAMILIES.items()}
FAMILY_BOS_EOS = {name: (family.bos, family.eos) for name, family in FAMILIES.items()}
GENERATION_PROMPTS = {name: family.generation_prompt for name, family in FAMILIES.items()}
