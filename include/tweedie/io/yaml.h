// A YAML subset -> JSON (nlohmann::json), enough for the configuration files
// diffusion models ship with: the original LDM/SGM inference yamls
// (v1-inference.yaml, v2-inference-v.yaml, sd_xl_base.yaml, ...) and similar.
//
// Supported: block mappings and sequences by indentation ("key: value",
// "key:" + an indented block, "- item", "- key: value" starting a mapping),
// flow sequences and mappings ([4, 2, 1], {a: 1}), plain, 'single' and
// "double" quoted scalars, comments, a leading "---". Plain scalars become
// integers, floats (1.0e-04, .5, inf/nan are strings), booleans
// (true/false/True/False/TRUE/FALSE), null (null, ~, empty value) or strings.
// Anything else (anchors, aliases, tags, multi-line scalars "|" / ">",
// duplicate keys, tabs in indentation, bad indentation) is an Error naming
// `where` and the line: "v1-inference.yaml:12: anchors are not supported".
// Verified in tests/test_io.cpp (Yaml*): the real LDM and SGM files' shapes,
// nesting, scalars and every rejected feature.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace tweedie {

nlohmann::json parse_yaml(const std::string& text, const std::string& where);

}  // namespace tweedie
