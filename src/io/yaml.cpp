// YAML subset -> JSON (see include/tweedie/io/yaml.h).
#include "tweedie/io/yaml.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "tweedie/core/error.h"

namespace tweedie {
namespace {

using json = nlohmann::json;

struct Line {
  int number;   // 1-based, for errors
  size_t indent;
  std::string text;  // without indentation and comment, right-trimmed
};

class Parser {
 public:
  Parser(const std::string& text, std::string where) : where_(std::move(where)) { split(text); }

  json document() {
    if (lines_.empty()) return json(nullptr);
    json v = block(lines_[0].indent);
    if (pos_ < lines_.size()) bad(lines_[pos_].number, "unexpected indentation");
    return v;
  }

 private:
  [[noreturn]] void bad(int line, const std::string& why) const { fail(where_, ":", line, ": ", why); }

  // Strip a comment: '#' at the start or after whitespace, outside quotes.
  static std::string strip_comment(const std::string& s) {
    char quote = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (quote) {
        if (c == '\\' && quote == '"') ++i;
        else if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        if (i == 0 || s[i - 1] == ' ' || s[i - 1] == '[' || s[i - 1] == '{' || s[i - 1] == ',' || s[i - 1] == ':' ||
            s[i - 1] == '-')
          quote = c;
      } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
        return s.substr(0, i);
      }
    }
    return s;
  }

  void split(const std::string& text) {
    size_t start = 0;
    int number = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string raw = text.substr(start, end - start);
      start = end + 1;
      ++number;
      if (!raw.empty() && raw.back() == '\r') raw.pop_back();
      size_t indent = 0;
      while (indent < raw.size() && raw[indent] == ' ') ++indent;
      if (indent < raw.size() && raw[indent] == '\t') bad(number, "tabs are not allowed in indentation");
      std::string t = strip_comment(raw.substr(indent));
      while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
      if (t.empty()) continue;
      if (lines_.empty() && indent == 0 && (t == "---" || t.rfind("--- ", 0) == 0)) continue;
      if (t == "..." && indent == 0) break;
      if (t.rfind("%", 0) == 0 && indent == 0) bad(number, "directives are not supported");
      lines_.push_back({number, indent, t});
      if (start > text.size()) break;
    }
  }

  static bool is_seq_item(const std::string& t) { return t == "-" || t.rfind("- ", 0) == 0; }

  // The position of the ':' that ends a mapping key in t, or npos.
  static size_t key_colon(const std::string& t) {
    if (t.empty() || t[0] == '[' || t[0] == '{') return std::string::npos;
    if (t[0] == '"' || t[0] == '\'') {
      const char q = t[0];
      size_t i = 1;
      for (; i < t.size(); ++i) {
        if (q == '"' && t[i] == '\\') ++i;
        else if (t[i] == q) break;
      }
      if (i + 1 < t.size() && t[i + 1] == ':' && (i + 2 == t.size() || t[i + 2] == ' ')) return i + 1;
      return std::string::npos;
    }
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i] == ':' && (i + 1 == t.size() || t[i + 1] == ' ')) return i;
    return std::string::npos;
  }

  // A node whose lines have exactly `indent`. Nesting is bounded: each level is a recursion ("- - - ... x" on
  // one line would otherwise overflow the stack).
  json block(size_t indent) {
    if (depth_ >= 64) bad(lines_[pos_].number, "blocks nested more than 64 deep");
    ++depth_;
    json v = block_at(indent);
    --depth_;
    return v;
  }
  json block_at(size_t indent) {
    const Line& first = lines_[pos_];
    if (is_seq_item(first.text)) return sequence(indent);
    if (key_colon(first.text) != std::string::npos) return mapping(indent);
    // A lone scalar (or flow collection) as the whole block.
    ++pos_;
    return value(first.text, first.number);
  }

  json sequence(size_t indent) {
    json arr = json::array();
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && is_seq_item(lines_[pos_].text)) {
      Line& l = lines_[pos_];
      if (l.text == "-") {
        ++pos_;
        if (pos_ < lines_.size() && lines_[pos_].indent > indent) arr.push_back(block(lines_[pos_].indent));
        else arr.push_back(nullptr);
        continue;
      }
      // "- rest": rest is read as a line of its own at the column it starts.
      size_t k = 2;
      while (k < l.text.size() && l.text[k] == ' ') ++k;
      l.indent = indent + k;
      l.text = l.text.substr(k);
      arr.push_back(block(l.indent));
    }
    if (pos_ < lines_.size() && lines_[pos_].indent > indent) bad(lines_[pos_].number, "bad indentation");
    return arr;
  }

  json mapping(size_t indent) {
    json obj = json::object();
    while (pos_ < lines_.size() && lines_[pos_].indent == indent) {
      const Line l = lines_[pos_];
      if (is_seq_item(l.text)) bad(l.number, "a sequence item where a mapping key was expected");
      const size_t c = key_colon(l.text);
      if (c == std::string::npos) bad(l.number, "expected 'key: value', got '" + l.text + "'");
      std::string key = l.text.substr(0, c);
      while (!key.empty() && key.back() == ' ') key.pop_back();
      if (key.empty()) bad(l.number, "empty mapping key");
      if (key[0] == '"' || key[0] == '\'') key = quoted(key, l.number).get<std::string>();
      else if (key[0] == '?' || key[0] == '&' || key[0] == '*' || key[0] == '!') bad(l.number, "complex keys, anchors, aliases and tags are not supported");
      if (obj.contains(key)) bad(l.number, "duplicate key '" + key + "'");
      std::string rest = l.text.substr(c + 1);
      size_t s = 0;
      while (s < rest.size() && rest[s] == ' ') ++s;
      rest = rest.substr(s);
      ++pos_;
      if (!rest.empty()) {
        obj[key] = value(rest, l.number);
      } else if (pos_ < lines_.size() && lines_[pos_].indent > indent) {
        obj[key] = block(lines_[pos_].indent);
      } else if (pos_ < lines_.size() && lines_[pos_].indent == indent && is_seq_item(lines_[pos_].text)) {
        obj[key] = sequence(indent);  // "key:\n- a\n- b" (sequence at the key's indentation)
      } else {
        obj[key] = nullptr;
      }
    }
    if (pos_ < lines_.size() && lines_[pos_].indent > indent) bad(lines_[pos_].number, "bad indentation");
    return obj;
  }

  json quoted(const std::string& t, int line) const {
    const char q = t[0];
    std::string out;
    size_t i = 1;
    for (; i < t.size(); ++i) {
      char c = t[i];
      if (c == q) {
        if (q == '\'' && i + 1 < t.size() && t[i + 1] == '\'') {  // '' in a single-quoted scalar
          out += '\'';
          ++i;
          continue;
        }
        break;
      }
      if (q == '"' && c == '\\') {
        if (++i >= t.size()) bad(line, "unterminated escape");
        switch (t[i]) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case '0': out += '\0'; break;
          default: bad(line, std::string("unsupported escape '\\") + t[i] + "'");
        }
        continue;
      }
      out += c;
    }
    if (i >= t.size()) bad(line, "unterminated quoted scalar (multi-line scalars are not supported)");
    if (i + 1 != t.size()) bad(line, "text after a quoted scalar: '" + t.substr(i + 1) + "'");
    return out;
  }

  static json plain(const std::string& t) {
    if (t == "null" || t == "Null" || t == "NULL" || t == "~") return nullptr;
    if (t == "true" || t == "True" || t == "TRUE") return true;
    if (t == "false" || t == "False" || t == "FALSE") return false;
    const char* b = t.c_str();
    char* e = nullptr;
    const bool numeric_start = (t[0] >= '0' && t[0] <= '9') || ((t[0] == '-' || t[0] == '+' || t[0] == '.') && t.size() > 1);
    if (numeric_start) {
      errno = 0;
      const long long i = std::strtoll(b, &e, 10);
      if (*e == '\0' && errno == 0) return int64_t(i);
      errno = 0;
      const double d = std::strtod(b, &e);
      if (*e == '\0' && errno == 0 && std::isfinite(d) && t.find_first_of("xXpP") == std::string::npos) return d;
    }
    return t;
  }

  json value(const std::string& t, int line) {
    switch (t[0]) {
      case '&': case '*': case '!': bad(line, "anchors, aliases and tags are not supported");
      case '|': case '>': bad(line, "block scalars ('|', '>') are not supported");
      case '"': case '\'': return quoted(t, line);
      case '[': case '{': {
        size_t i = 0;
        json v = flow(t, i, line, 0);
        while (i < t.size() && t[i] == ' ') ++i;
        if (i != t.size()) bad(line, "text after a flow collection: '" + t.substr(i) + "'");
        return v;
      }
      default:
        if (t.find(": ") != std::string::npos || (t.back() == ':'))
          bad(line, "a mapping on one line needs its own line or braces: '" + t + "'");
        return plain(t);
    }
  }

  // Flow collections: [a, b] and {k: v}, nested; i is advanced past the collection.
  json flow(const std::string& t, size_t& i, int line, int depth) {
    if (depth > 64) bad(line, "flow collections nested more than 64 deep");
    const char open = t[i], close = open == '[' ? ']' : '}';
    json out = open == '[' ? json::array() : json::object();
    ++i;
    auto skip = [&] {
      while (i < t.size() && t[i] == ' ') ++i;
    };
    skip();
    if (i < t.size() && t[i] == close) {
      ++i;
      return out;
    }
    for (;;) {
      skip();
      if (i >= t.size()) bad(line, std::string("unterminated flow collection (missing '") + close + "')");
      std::string key;
      if (open == '{') {
        const size_t start = i;
        while (i < t.size() && t[i] != ':' && t[i] != ',' && t[i] != '}') ++i;
        if (i >= t.size() || t[i] != ':') bad(line, "expected 'key: value' in a flow mapping");
        key = t.substr(start, i - start);
        while (!key.empty() && key.back() == ' ') key.pop_back();
        if (!key.empty() && (key[0] == '"' || key[0] == '\'')) key = quoted(key, line).get<std::string>();
        if (key.empty()) bad(line, "empty key in a flow mapping");
        if (out.contains(key)) bad(line, "duplicate key '" + key + "'");
        ++i;
        skip();
      }
      json item;
      if (i < t.size() && (t[i] == '[' || t[i] == '{')) {
        item = flow(t, i, line, depth + 1);
      } else if (i < t.size() && (t[i] == '"' || t[i] == '\'')) {
        const char q = t[i];
        size_t j = i + 1;
        for (; j < t.size(); ++j) {
          if (q == '"' && t[j] == '\\') ++j;
          else if (t[j] == q) {
            if (q == '\'' && j + 1 < t.size() && t[j + 1] == '\'') ++j;
            else break;
          }
        }
        if (j >= t.size()) bad(line, "unterminated quoted scalar");
        item = quoted(t.substr(i, j + 1 - i), line);
        i = j + 1;
      } else {
        const size_t start = i;
        while (i < t.size() && t[i] != ',' && t[i] != close && t[i] != '[' && t[i] != '{' && t[i] != ']' && t[i] != '}') ++i;
        std::string s = t.substr(start, i - start);
        while (!s.empty() && s.back() == ' ') s.pop_back();
        if (s.empty()) bad(line, "empty item in a flow collection");
        if (s[0] == '&' || s[0] == '*' || s[0] == '!') bad(line, "anchors, aliases and tags are not supported");
        item = plain(s);
      }
      if (open == '[') out.push_back(item);
      else out[key] = item;
      skip();
      if (i >= t.size()) bad(line, std::string("unterminated flow collection (missing '") + close + "')");
      if (t[i] == ',') {
        ++i;
        skip();
        if (i < t.size() && t[i] == close) {  // trailing comma
          ++i;
          return out;
        }
        continue;
      }
      if (t[i] == close) {
        ++i;
        return out;
      }
      bad(line, std::string("expected ',' or '") + close + "' in a flow collection, got '" + t[i] + "'");
    }
  }

  std::string where_;
  std::vector<Line> lines_;
  size_t pos_ = 0;
  int depth_ = 0;  // block nesting
};

}  // namespace

nlohmann::json parse_yaml(const std::string& text, const std::string& where) {
  if (text.find('\0') != std::string::npos) fail(where, ": not a text file (NUL byte)");
  return Parser(text, where).document();
}

}  // namespace tweedie
