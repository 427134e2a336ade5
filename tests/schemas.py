"""JSON schemas covering what response_format must enforce: objects, arrays, enums, consts,
anyOf/oneOf, $ref/$defs, nullable type lists, string lengths and patterns, number ranges,
unicode and escapes. Every string, array and number is bounded (a number with no `multipleOf`
may carry any number of digits: 1.0000... is within `maximum: 1`), so a sampled reply ends well
within the tests' token limit."""

from __future__ import annotations

import json
from decimal import Decimal

import jsonschema


def validate_json(text: str, schema: dict) -> None:
    """jsonschema's check of a JSON text, its numbers read as decimals: in floats 0.47 is no
    multiple of 0.01 (0.47 / 0.01 is 46.99999999999999)."""
    exact_schema = json.loads(json.dumps(schema), parse_float=Decimal)
    jsonschema.validate(json.loads(text, parse_float=Decimal), exact_schema)


NAME = {"type": "string", "minLength": 1, "maxLength": 12}
SCHEMAS: dict[str, dict] = {
    "person": {
        "type": "object",
        "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 999},
                    "name": NAME,
                },
                "required": ["id", "name"],
                "additionalProperties": False,
            },
            "active": {"type": "boolean"},
        },
        "required": ["user", "active"],
        "additionalProperties": False,
    },
    "tags": {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
        "additionalProperties": False,
    },
    "const": {
        "type": "object",
        "properties": {
            "kind": {"const": "event"},
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["kind", "n"],
        "additionalProperties": False,
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 50}, NAME]}
        },
        "required": ["value"],
        "additionalProperties": False,
    },
    "one_of": {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": "circle"},
                            "r": {"type": "integer", "minimum": 1, "maximum": 9},
                        },
                        "required": ["type", "r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": "square"},
                            "side": {"type": "integer", "minimum": 1, "maximum": 9},
                        },
                        "required": ["type", "side"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "required": ["shape"],
        "additionalProperties": False,
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -9, "maximum": 9},
                    "y": {"type": "integer", "minimum": -9, "maximum": 9},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
        "additionalProperties": False,
    },
    "nullable": {
        "type": "object",
        "properties": {"nickname": {"type": ["string", "null"], "maxLength": 8}},
        "required": ["nickname"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "number_range": {
        "type": "object",
        "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.01}},
        "required": ["score"],
        "additionalProperties": False,
    },
    "exclusive_range": {
        "type": "object",
        "properties": {"t": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20}},
        "required": ["t"],
        "additionalProperties": False,
    },
    "string_lengths": {
        "type": "object",
        "properties": {"word": {"type": "string", "minLength": 3, "maxLength": 5}},
        "required": ["word"],
        "additionalProperties": False,
    },
    "unicode": {
        "type": "object",
        "properties": {
            "città": {"enum": ["Zürich", "東京", "São Paulo"]},
            "note": {"type": "string", "maxLength": 6},
        },
        "required": ["città", "note"],
        "additionalProperties": False,
    },
    "escapes": {
        "type": "object",
        "properties": {
            "quote": {"const": 'say "hi"\\n\ttab \\ slash'},
            "path": {"const": "C:\\dir\\file"},
        },
        "required": ["quote", "path"],
        "additionalProperties": False,
    },
    "optional": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": NAME},
        "required": ["a"],
        "additionalProperties": False,
    },
    "array_of_objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": NAME,
                        "qty": {"type": "integer", "minimum": 1, "maximum": 5},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
    "nested_arrays": {
        "type": "object",
        "properties": {
            "grid": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 9},
                    "minItems": 1,
                    "maxItems": 3,
                },
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["grid"],
        "additionalProperties": False,
    },
    "integer_enum": {
        "type": "object",
        "properties": {"level": {"enum": [1, 2, 3, 5, 8]}},
        "required": ["level"],
        "additionalProperties": False,
    },
    "mixed_enum": {
        "type": "object",
        "properties": {"v": {"enum": ["on", "off", True, None, 0]}},
        "required": ["v"],
        "additionalProperties": False,
    },
    "any_of_objects": {
        "anyOf": [
            {
                "type": "object",
                "properties": {"ok": {"const": True}, "data": NAME},
                "required": ["ok", "data"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"ok": {"const": False}, "error": NAME},
                "required": ["ok", "error"],
                "additionalProperties": False,
            },
        ]
    },
    "top_level_array": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 100},
        "minItems": 2,
        "maxItems": 4,
    },
    "boolean_flags": {
        "type": "object",
        "properties": {"read": {"type": "boolean"}, "write": {"type": "boolean"}},
        "required": ["read", "write"],
        "additionalProperties": False,
    },
    "nullable_object": {
        "type": "object",
        "properties": {
            "owner": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {"name": NAME},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "required": ["owner"],
        "additionalProperties": False,
    },
    "date_like": {
        "type": "object",
        "properties": {
            "date": {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])$"}
        },
        "required": ["date"],
        "additionalProperties": False,
    },
    "deep": {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b": {
                        "type": "object",
                        "properties": {
                            "c": {
                                "type": "array",
                                "items": {"enum": ["x", "y"]},
                                "minItems": 1,
                                "maxItems": 2,
                            }
                        },
                        "required": ["c"],
                        "additionalProperties": False,
                    }
                },
                "required": ["b"],
                "additionalProperties": False,
            }
        },
        "required": ["a"],
        "additionalProperties": False,
    },
}
