// Safe unpickler (allow-listed globals, nothing executed) and the torch.save
// ZIP format on top of it; see io/pickle.h. Opcodes follow CPython's
// Lib/pickle.py / pickletools (protocols 0-5); values are owned by an arena
// in the Unpickler, so there is no recursion and no reference cycle.
#include "tweedie/io/pickle.h"

#include <cstring>
#include <fstream>
#include <set>
#include <unordered_map>

#include "tweedie/core/error.h"
#include "tweedie/io/state_dict.h"
#include "tweedie/io/zip.h"

namespace tweedie {

const PyValue* PyValue::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (auto& [k, v] : dict)
    if (k->kind == Kind::Str && k->s == key) return v;
  return nullptr;
}

namespace {

using K = PyValue::Kind;

struct StorageType {
  const char* name;
  torch::ScalarType dtype;
};
const StorageType kStorages[] = {
    {"torch.FloatStorage", torch::kFloat32},   {"torch.DoubleStorage", torch::kFloat64},
    {"torch.HalfStorage", torch::kFloat16},    {"torch.BFloat16Storage", torch::kBFloat16},
    {"torch.LongStorage", torch::kInt64},      {"torch.IntStorage", torch::kInt32},
    {"torch.ShortStorage", torch::kInt16},     {"torch.CharStorage", torch::kInt8},
    {"torch.ByteStorage", torch::kUInt8},      {"torch.BoolStorage", torch::kBool},
    {"torch.UntypedStorage", torch::kUInt8},   {"torch.ComplexFloatStorage", torch::kComplexFloat},
    {"torch.ComplexDoubleStorage", torch::kComplexDouble}};

const StorageType* storage_type(const std::string& name) {
  for (auto& s : kStorages)
    if (name == s.name) return &s;
  return nullptr;
}

// Callables whose REDUCE we evaluate ourselves.
const char* const kRebuilders[] = {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                                   "torch._utils._rebuild_parameter_with_state",
                                   "torch._tensor._rebuild_from_type_v2", "collections.OrderedDict"};
// Harmless classes seen in real checkpoints: kept as opaque values, never called.
const char* const kOpaque[] = {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
                               "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                               "numpy.dtype", "numpy.ndarray", "argparse.Namespace", "torch.device", "torch.Size",
                               "torch.Tensor", "torch.nn.parameter.Parameter", "torch.torch_version.TorchVersion",
                               "builtins.set", "builtins.frozenset", "builtins.slice", "_codecs.encode"};
const char* const kOpaqueModules[] = {"pytorch_lightning", "lightning", "lightning_fabric"};

bool listed(const std::string& full, const char* const* begin, const char* const* end) {
  for (auto p = begin; p != end; ++p)
    if (full == *p) return true;
  return false;
}

bool allowed_global(const std::string& module, const std::string& full) {
  if (listed(full, std::begin(kRebuilders), std::end(kRebuilders)) || listed(full, std::begin(kOpaque), std::end(kOpaque)) ||
      storage_type(full))
    return true;
  for (const char* m : kOpaqueModules) {
    const size_t n = std::strlen(m);
    if (module.compare(0, n, m) == 0 && (module.size() == n || module[n] == '.')) return true;
  }
  return false;
}

}  // namespace

struct Unpickler::Impl {
  std::string_view data;
  size_t pos = 0;
  std::string where;
  StorageLoader storages;
  std::vector<std::unique_ptr<PyValue>> arena;
  std::vector<PyValue*> stack;
  std::vector<size_t> marks;
  std::unordered_map<uint64_t, PyValue*> memo;
  std::unordered_map<std::string, PyValue*> storage_memo;
  const PyValue* result = nullptr;

  [[noreturn]] void bad(const std::string& what) const { fail(where, ": malformed pickle at byte ", pos, ": ", what); }

  // Values copied out of a container that stays (OrderedDict(list), an opaque object's arguments, a tensor's
  // size): the container can be memoized and reused, so without a bound a 160 KB pickle of 20000 OrderedDict
  // calls on one 20000-pair list built 400M pairs (GBs). A real pickle copies each value about once.
  size_t copied = 0;
  void charge(size_t n) {
    copied += n;
    if (copied > 16 * data.size() + (size_t(1) << 16))
      bad("more values copied than a pickle of " + std::to_string(data.size()) +
          " bytes can hold (one container reused over and over?)");
  }

  PyValue* make(K kind) {
    arena.push_back(std::make_unique<PyValue>());
    arena.back()->kind = kind;
    return arena.back().get();
  }
  PyValue* make_int(int64_t v) {
    PyValue* p = make(K::Int);
    p->i = v;
    return p;
  }
  PyValue* make_str(K kind, std::string s) {
    PyValue* p = make(kind);
    p->s = std::move(s);
    return p;
  }

  // ---- input
  const char* take(uint64_t n) {
    if (n > data.size() - pos) bad("unexpected end of data (truncated pickle?)");
    const char* p = data.data() + pos;
    pos += n;
    return p;
  }
  uint64_t uint_le(int n) {
    const char* p = take(n);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t((unsigned char)p[i]) << (8 * i);
    return v;
  }
  std::string line() {
    const size_t e = data.find('\n', pos);
    if (e == std::string_view::npos) bad("unterminated text argument");
    std::string s(data.substr(pos, e - pos));
    pos = e + 1;
    return s;
  }
  int64_t text_int(const std::string& s) {
    try {
      size_t n = 0;
      const int64_t v = std::stoll(s, &n);
      if (n == 0) throw std::invalid_argument(s);
      return v;
    } catch (const std::exception&) {
      bad("bad integer '" + s + "'");
    }
  }

  // ---- stack
  void push(PyValue* v) { stack.push_back(v); }
  PyValue* pop() {
    if (stack.size() <= (marks.empty() ? 0 : marks.back())) bad("stack underflow");
    PyValue* v = stack.back();
    stack.pop_back();
    return v;
  }
  PyValue* top() {
    if (stack.size() <= (marks.empty() ? 0 : marks.back())) bad("stack underflow");
    return stack.back();
  }
  std::vector<PyValue*> pop_mark() {
    if (marks.empty()) bad("no MARK on the stack");
    std::vector<PyValue*> items(stack.begin() + marks.back(), stack.end());
    stack.resize(marks.back());
    marks.pop_back();
    return items;
  }
  PyValue* tuple_of(const std::vector<PyValue*>& items) {
    PyValue* t = make(K::Tuple);
    t->items.assign(items.begin(), items.end());
    return t;
  }
  PyValue* memo_get(uint64_t k) {
    auto it = memo.find(k);
    if (it == memo.end()) bad("memo key " + std::to_string(k) + " is not defined");
    return it->second;
  }

  // ---- globals and calls
  PyValue* global(std::string module, std::string name) {
    if (module == "__builtin__") module = "builtins";  // protocol-2 spelling
    const std::string full = module + "." + name;
    if (!allowed_global(module, full)) {
      if (module == "torch" || module.compare(0, 6, "torch.") == 0)  // harmless but unsupported (quantized, sparse, ...)
        fail(where, ": unsupported torch object in pickle: ", full, " (plain dense tensors only)");
      fail(where, ": refusing to execute pickled code: ", full);
    }
    return make_str(K::Global, full);
  }

  static bool is_int(const PyValue* v) { return v->kind == K::Int; }

  std::vector<int64_t> int_tuple(const PyValue* v, const char* what) {
    if (v->kind != K::Tuple && v->kind != K::List) bad(std::string(what) + " is not a tuple");
    charge(v->items.size());
    std::vector<int64_t> out;
    for (auto* e : v->items) {
      if (!is_int(e) || e->i < 0) bad(std::string(what) + " has a non-integer or negative entry");
      out.push_back(e->i);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  PyValue* rebuild_tensor(const std::vector<const PyValue*>& a) {
    if (a.size() < 4 || a[0]->kind != K::Storage || !is_int(a[1]) || a[1]->i < 0)
      bad("_rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
    const torch::Tensor& st = a[0]->tensor;
    const int64_t offset = a[1]->i, n = st.numel();
    const auto size = int_tuple(a[2], "tensor size"), stride = int_tuple(a[3], "tensor stride");
    if (size.size() != stride.size()) bad("tensor size and stride differ in length");
    PyValue* t = make(K::Tensor);
    int64_t numel = 1, last = offset;  // numel and the largest storage index a view touches
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] == 0) empty = true;
      int64_t span;
      if (__builtin_mul_overflow(size[d], numel, &numel) ||
          __builtin_mul_overflow(size[d] > 0 ? size[d] - 1 : 0, stride[d], &span) ||
          __builtin_add_overflow(last, span, &last))
        fail(where, ": tensor shape/stride overflows (size ", torch::IntArrayRef(size), ")");
    }
    if (empty) {
      if (offset > n) fail(where, ": tensor offset ", offset, " is beyond its ", n, "-element storage");
      t->tensor = torch::empty(size, st.options());
      return t;
    }
    if (last >= n)
      fail(where, ": tensor of size ", torch::IntArrayRef(size), " (offset ", offset, ", stride ",
           torch::IntArrayRef(stride), ") needs ", last + 1, " elements but its storage has ", n);
    if (numel > n && numel > (int64_t(1) << 24))
      fail(where, ": tensor of size ", torch::IntArrayRef(size), " is far larger than its ", n, "-element storage");
    t->tensor = st.as_strided(size, stride, offset);
    return t;
  }

  PyValue* call(const PyValue* fn, const PyValue* args) {
    if (fn->kind != K::Global) bad("REDUCE on a value that is not a class or function");
    if (args->kind != K::Tuple) bad("REDUCE arguments are not a tuple");
    const std::string& f = fn->s;
    const auto& a = args->items;
    if (f == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != K::Tensor) bad(f + " expects a tensor");
      return const_cast<PyValue*>(a[0]);
    }
    if (f == "torch._tensor._rebuild_from_type_v2") {  // (func, type, args, state)
      if (a.size() < 3) bad(f + " expects (func, type, args, state)");
      if (a[0]->kind == K::Global && a[0]->s == f) bad(f + " calls itself");
      return call(a[0], a[2]);
    }
    if (f == "collections.OrderedDict") {
      PyValue* d = make(K::Dict);
      if (!a.empty()) {  // OrderedDict([(k, v), ...])
        if (a[0]->kind != K::List && a[0]->kind != K::Tuple) bad("OrderedDict argument is not a list");
        charge(a[0]->items.size());
        for (auto* kv : a[0]->items) {
          if ((kv->kind != K::Tuple && kv->kind != K::List) || kv->items.size() != 2) bad("OrderedDict item is not a pair");
          d->dict.emplace_back(kv->items[0], kv->items[1]);
        }
      }
      return d;
    }
    if (storage_type(f)) bad("unexpected call to " + f);
    PyValue* o = make_str(K::Object, f);  // an allow-listed opaque class
    charge(a.size());
    o->items = a;
    return o;
  }

  // ('storage', <Type>Storage, key, location, numel)
  PyValue* persistent_load(const PyValue* pid) {
    if (pid->kind != K::Tuple || pid->items.size() < 5 || pid->items[0]->kind != K::Str || pid->items[0]->s != "storage")
      bad("unsupported persistent id (expected ('storage', type, key, location, numel))");
    const auto& it = pid->items;
    const StorageType* type = it[1]->kind == K::Global ? storage_type(it[1]->s) : nullptr;
    if (!type) bad("unsupported storage type" + (it[1]->kind == K::Global ? " " + it[1]->s : std::string()));
    if (it[2]->kind != K::Str || !is_int(it[4]) || it[4]->i < 0) bad("malformed storage persistent id");
    const std::string& key = it[2]->s;
    auto found = storage_memo.find(key);
    if (found != storage_memo.end()) {
      if (found->second->tensor.scalar_type() != type->dtype)
        fail(where, ": storage '", key, "' is used with two dtypes");
      return found->second;
    }
    PyValue* s = make(K::Storage);
    s->tensor = storages(key, type->dtype, it[4]->i);
    storage_memo[key] = s;
    return s;
  }

  void set_items(PyValue* d, const std::vector<PyValue*>& kv) {
    if (d->kind == K::Object) return;  // __setstate__-like data on an opaque object: ignored
    if (d->kind != K::Dict) bad("SETITEM(S) on a value that is not a dict");
    if (kv.size() % 2) bad("SETITEMS with an odd number of items");
    for (size_t i = 0; i < kv.size(); i += 2) {
      bool replaced = false;
      if (kv[i]->kind == K::Str)
        for (auto& [k, v] : d->dict)
          if (k->kind == K::Str && k->s == kv[i]->s) {
            v = kv[i + 1];
            replaced = true;
          }
      if (!replaced) d->dict.emplace_back(kv[i], kv[i + 1]);
    }
  }
  void append(PyValue* l, const std::vector<PyValue*>& xs) {
    if (l->kind == K::Object) return;
    if (l->kind != K::List && l->kind != K::Set) bad("APPEND(S)/ADDITEMS on a value that is not a list or set");
    l->items.insert(l->items.end(), xs.begin(), xs.end());
  }

  double be_double() {
    const char* p = take(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | (unsigned char)p[i];
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  int64_t long_bytes(uint64_t n) {
    if (n > 8) bad("integer wider than 64 bits");
    const char* p = take(n);
    uint64_t v = 0;
    for (uint64_t i = 0; i < n; ++i) v |= uint64_t((unsigned char)p[i]) << (8 * i);
    if (n > 0 && n < 8 && ((unsigned char)p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return int64_t(v);
  }

  void run() {
    while (true) {
      const unsigned char op = (unsigned char)*take(1);
      switch (op) {
        case 0x80: take(1); break;                        // PROTO
        case 0x95: take(8); break;                        // FRAME (a size hint)
        case '.': result = pop(); return;                 // STOP
        case '(': marks.push_back(stack.size()); break;   // MARK
        case '0': pop(); break;                           // POP
        case '1': pop_mark(); break;                      // POP_MARK
        case '2': push(top()); break;                     // DUP
        case 'N': push(make(K::None)); break;
        case 0x88: case 0x89: {                           // NEWTRUE, NEWFALSE
          PyValue* b = make(K::Bool);
          b->b = op == 0x88;
          push(b);
          break;
        }
        case 'J': push(make_int(int32_t(uint_le(4)))); break;  // BININT
        case 'K': push(make_int(int64_t(uint_le(1)))); break;  // BININT1
        case 'M': push(make_int(int64_t(uint_le(2)))); break;  // BININT2
        case 0x8a: push(make_int(long_bytes(uint_le(1)))); break;  // LONG1
        case 0x8b: push(make_int(long_bytes(uint_le(4)))); break;  // LONG4
        case 'I': {                                       // INT (text; I01/I00 are booleans)
          const std::string s = line();
          if (s == "01" || s == "00") {
            PyValue* b = make(K::Bool);
            b->b = s == "01";
            push(b);
          } else {
            push(make_int(text_int(s)));
          }
          break;
        }
        case 'L': {                                       // LONG (text, trailing L)
          std::string s = line();
          if (!s.empty() && s.back() == 'L') s.pop_back();
          push(make_int(text_int(s)));
          break;
        }
        case 'G': {                                       // BINFLOAT
          PyValue* f = make(K::Float);
          f->f = be_double();
          push(f);
          break;
        }
        case 'F': {                                       // FLOAT (text)
          const std::string s = line();
          PyValue* f = make(K::Float);
          try {
            f->f = std::stod(s);
          } catch (const std::exception&) {
            bad("bad float '" + s + "'");
          }
          push(f);
          break;
        }
        case 'X': { const uint64_t n = uint_le(4); push(make_str(K::Str, std::string(take(n), n))); break; }
        case 0x8c: { const uint64_t n = uint_le(1); push(make_str(K::Str, std::string(take(n), n))); break; }
        case 0x8d: { const uint64_t n = uint_le(8); push(make_str(K::Str, std::string(take(n), n))); break; }
        case 'V': push(make_str(K::Str, line())); break;  // UNICODE (raw-unicode-escape; escapes kept)
        case 'T': { const uint64_t n = uint_le(4); push(make_str(K::Bytes, std::string(take(n), n))); break; }
        case 'U': { const uint64_t n = uint_le(1); push(make_str(K::Bytes, std::string(take(n), n))); break; }
        case 'B': { const uint64_t n = uint_le(4); push(make_str(K::Bytes, std::string(take(n), n))); break; }
        case 'C': { const uint64_t n = uint_le(1); push(make_str(K::Bytes, std::string(take(n), n))); break; }
        case 0x8e: case 0x96: { const uint64_t n = uint_le(8); push(make_str(K::Bytes, std::string(take(n), n))); break; }
        case 'S': {                                       // STRING (quoted repr)
          std::string s = line();
          if (s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0]) s = s.substr(1, s.size() - 2);
          push(make_str(K::Bytes, s));
          break;
        }
        case ')': push(make(K::Tuple)); break;            // EMPTY_TUPLE
        case 't': push(tuple_of(pop_mark())); break;      // TUPLE
        case 0x85: { PyValue* a = pop(); push(tuple_of({a})); break; }
        case 0x86: { PyValue* b = pop(); PyValue* a = pop(); push(tuple_of({a, b})); break; }
        case 0x87: { PyValue* c = pop(); PyValue* b = pop(); PyValue* a = pop(); push(tuple_of({a, b, c})); break; }
        case ']': push(make(K::List)); break;             // EMPTY_LIST
        case 'l': { PyValue* l = make(K::List); auto xs = pop_mark(); l->items.assign(xs.begin(), xs.end()); push(l); break; }
        case 'a': { PyValue* x = pop(); append(top(), {x}); break; }
        case 'e': { auto xs = pop_mark(); append(top(), xs); break; }
        case '}': push(make(K::Dict)); break;             // EMPTY_DICT
        case 'd': { PyValue* d = make(K::Dict); set_items(d, pop_mark()); push(d); break; }
        case 's': { PyValue* v = pop(); PyValue* k = pop(); set_items(top(), {k, v}); break; }
        case 'u': { auto kv = pop_mark(); set_items(top(), kv); break; }
        case 0x8f: push(make(K::Set)); break;             // EMPTY_SET
        case 0x90: { auto xs = pop_mark(); append(top(), xs); break; }  // ADDITEMS
        case 0x91: { PyValue* s = make(K::Set); auto xs = pop_mark(); s->items.assign(xs.begin(), xs.end()); push(s); break; }
        case 'p': memo[uint64_t(text_int(line()))] = top(); break;  // PUT
        case 'q': memo[uint_le(1)] = top(); break;        // BINPUT
        case 'r': memo[uint_le(4)] = top(); break;        // LONG_BINPUT
        case 0x94: { const uint64_t k = memo.size(); memo[k] = top(); break; }  // MEMOIZE
        case 'g': push(memo_get(uint64_t(text_int(line())))); break;  // GET
        case 'h': push(memo_get(uint_le(1))); break;      // BINGET
        case 'j': push(memo_get(uint_le(4))); break;      // LONG_BINGET
        case 'c': {                                       // GLOBAL "module\nname\n"
          std::string module = line();
          std::string name = line();
          push(global(std::move(module), std::move(name)));
          break;
        }
        case 0x93: {                                      // STACK_GLOBAL
          PyValue* name = pop();
          PyValue* module = pop();
          if (module->kind != K::Str || name->kind != K::Str) bad("STACK_GLOBAL needs two strings");
          push(global(module->s, name->s));
          break;
        }
        case 'R': { PyValue* args = pop(); PyValue* fn = pop(); push(call(fn, args)); break; }  // REDUCE
        case 0x81: { PyValue* args = pop(); PyValue* cls = pop(); push(call(cls, args)); break; }  // NEWOBJ
        case 0x92: { pop(); PyValue* args = pop(); PyValue* cls = pop(); push(call(cls, args)); break; }  // NEWOBJ_EX
        case 'i': {                                       // INST module\nname\n, args since MARK
          std::string module = line();
          std::string name = line();
          PyValue* cls = global(std::move(module), std::move(name));
          push(call(cls, tuple_of(pop_mark())));
          break;
        }
        case 'o': {                                       // OBJ: MARK cls args... OBJ
          auto xs = pop_mark();
          if (xs.empty()) bad("OBJ without a class");
          push(call(xs[0], tuple_of(std::vector<PyValue*>(xs.begin() + 1, xs.end()))));
          break;
        }
        case 'b': pop(); top(); break;                    // BUILD: state is ignored, the object stays
        case 'Q': push(persistent_load(pop())); break;    // BINPERSID
        case 'P': bad("text persistent ids are not used by torch.save");
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          bad(std::string("unsupported opcode ") + hex);
        }
      }
    }
  }
};

Unpickler::Unpickler(std::string_view data, std::string where, StorageLoader storages) : impl_(new Impl) {
  impl_->data = data;
  impl_->where = std::move(where);
  impl_->storages = std::move(storages);
}

Unpickler::~Unpickler() = default;

const PyValue& Unpickler::load() {
  if (!impl_->result) impl_->run();
  return *impl_->result;
}

// ------------------------------------------------------------- torch.save

namespace {

void flatten(const PyValue& d, const std::string& prefix, int depth, const std::string& path,
             std::vector<std::pair<std::string, torch::Tensor>>& out, size_t& visits) {
  if (depth > 16) fail(path, ": dicts nested more than 16 deep");
  for (auto& [k, v] : d.dict) {
    // A dict shared by several keys is read once per key: nested sharing multiplies (10 keys to one dict at each
    // of 16 levels is 10^16 entries from a 2 KB pickle).
    if (++visits > (size_t(1) << 20))
      fail(path, ": more than ", size_t(1) << 20, " dict entries to read (the same dicts shared over and over?)");
    if (k->kind != K::Str) continue;  // e.g. Lightning's {CallbackClass: state}
    if (v->kind == K::Tensor) out.emplace_back(prefix + k->s, v->tensor);
    else if (v->kind == K::Dict) flatten(*v, prefix + k->s + ".", depth + 1, path, out, visits);
  }
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> load_torch_file(const std::string& path) {
  switch (detect_weights_format(path)) {
    case WeightsFormat::TorchZip: break;
    case WeightsFormat::TorchLegacy:
      fail(path, ": legacy (pre-1.6, non-ZIP) torch.save format is not supported; re-save it with a current "
                 "torch (torch.save(torch.load(f), f)) or convert it to .safetensors");
    case WeightsFormat::Safetensors: fail(path, ": a safetensors file, not a torch.save file");
    case WeightsFormat::Unknown: fail(path, ": not a torch.save file (no ZIP signature)");
  }
  ZipReader zip(path);
  const ZipEntry* pkl = nullptr;
  for (auto& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (pkl) fail(path, ": two data.pkl entries ('", pkl->name, "', '", e.name, "')");
      pkl = &e;
    }
  }
  if (!pkl) fail(path, ": ZIP archive without <name>/data.pkl: not a torch.save file");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
  if (const ZipEntry* bo = zip.find(prefix + "byteorder"))
    if (zip.read(*bo).view() != "little") fail(path, ": big-endian torch.save files are not supported");
  const ZipBytes pickle = zip.read(*pkl, true);
  auto loader = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    const ZipEntry* e = zip.find(prefix + "data/" + key);
    if (!e) fail(path, ": pickle refers to storage '", key, "' but the archive has no '", prefix, "data/", key, "'");
    const ZipBytes b = zip.read(*e);
    const int64_t es = int64_t(c10::elementSize(dtype));
    if (uint64_t(numel) > b.size / es)
      fail(path, ": storage '", key, "' holds ", b.size, " bytes, fewer than its ", numel, " x ", es, " bytes");
    const auto opts = torch::TensorOptions().dtype(dtype);
    if (reinterpret_cast<uintptr_t>(b.data) % es != 0) {  // unaligned (not written by torch): copy
      torch::Tensor t = torch::empty({numel}, opts);
      std::memcpy(t.data_ptr(), b.data, numel * es);
      return t;
    }
    auto owner = b.owner;
    return torch::from_blob(const_cast<char*>(b.data), {numel}, [owner](void*) {}, opts);
  };
  Unpickler u(pickle.view(), path, loader);
  const PyValue& root = u.load();
  if (root.kind == K::Tensor) fail(path, ": holds a single tensor, not a dict of tensors");
  if (root.kind != K::Dict) fail(path, ": top-level object is not a dict of tensors");
  const PyValue* sd = root.get("state_dict");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  size_t visits = 0;
  flatten(sd && sd->kind == K::Dict ? *sd : root, "", 0, path, out, visits);
  return out;
}

namespace {

// A protocol-2 pickle writer with just what save_torch_file needs.
struct PickleOut {
  std::string b;
  void op(char c) { b.push_back(c); }
  void str(const std::string& s) {
    op('X');
    for (int i = 0; i < 4; ++i) b.push_back(char((s.size() >> (8 * i)) & 0xff));
    b += s;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      b.push_back(char(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      for (int i = 0; i < 4; ++i) b.push_back(char((uint32_t(v) >> (8 * i)) & 0xff));
    } else {
      op('\x8a');
      b.push_back(8);
      for (int i = 0; i < 8; ++i) b.push_back(char((uint64_t(v) >> (8 * i)) & 0xff));
    }
  }
  void global(const std::string& module, const std::string& name) {
    op('c');
    b += module + "\n" + name + "\n";
  }
  void int_tuple(torch::IntArrayRef xs) {
    op('(');
    for (auto x : xs) integer(x);
    op('t');
  }
  void empty_ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
};

const char* storage_name(torch::ScalarType t) {
  for (auto& s : kStorages)
    if (s.dtype == t && std::strcmp(s.name, "torch.UntypedStorage") != 0) return s.name + std::strlen("torch.");
  fail("save_torch_file: unsupported dtype ", t);
}

}  // namespace

void save_torch_file(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     bool under_state_dict) {
  PickleOut p;
  ZipWriter zip(path);
  const std::string prefix = "archive/";
  std::unordered_map<const void*, std::string> keys;  // storage -> key
  std::vector<torch::Tensor> keep;
  std::set<std::string> names;
  p.op('\x80');
  p.b.push_back(2);
  if (under_state_dict) {
    p.op('}');
    p.str("state_dict");
  }
  p.empty_ordered_dict();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t0] = tensors[i];
    check(names.insert(name).second, path, ": duplicate tensor name '", name, "'");
    const torch::Tensor t = t0.device().is_cpu() ? t0.detach() : t0.detach().cpu();
    const c10::Storage& st = t.storage();
    const int64_t es = t.element_size();
    std::string key;
    auto found = keys.find(st.data());
    if (found != keys.end()) {
      key = found->second;
    } else {
      key = std::to_string(keys.size());
      keys[st.data()] = key;
      keep.push_back(t);
      zip.add(prefix + "data/" + key, st.data(), st.nbytes());
    }
    if (i % 1000 == 0) p.op('(');
    p.str(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');
    p.str("storage");
    p.global("torch", storage_name(t.scalar_type()));
    p.str(key);
    p.str("cpu");
    p.integer(int64_t(st.nbytes()) / es);
    p.op('t');
    p.op('Q');
    p.integer(t.storage_offset());
    p.int_tuple(t.sizes());
    p.int_tuple(t.strides());
    p.op('\x89');
    p.empty_ordered_dict();
    p.op('t');
    p.op('R');
    if (i % 1000 == 999 || i + 1 == tensors.size()) p.op('u');
  }
  if (under_state_dict) p.op('s');
  p.op('.');
  zip.add(prefix + "data.pkl", p.b);
  zip.add(prefix + "byteorder", std::string("little"));
  zip.add(prefix + "version", std::string("3\n"));
  zip.finish();
}

}  // namespace tweedie
