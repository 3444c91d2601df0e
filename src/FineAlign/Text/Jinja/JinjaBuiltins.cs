using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FineAlign.Text.Jinja;

/// <summary>
/// The globals, filters, tests and methods of the environment transformers renders chat templates in
/// (<c>raise_exception</c>, <c>strftime_now</c>, its own <c>tojson</c>), plus the Jinja2 built-ins templates call
/// and the Python str/dict methods they use. Anything else is an error naming it.
/// </summary>
public sealed class JinjaBuiltins
{
    /// <summary>The clock behind <c>strftime_now</c> (fixed in tests).</summary>
    public Func<DateTime> Now { get; init; } = () => DateTime.Now;

    public IReadOnlyDictionary<string, object?> Globals => _globals ??= MakeGlobals();
    private Dictionary<string, object?>? _globals;

    private static JinjaException Fail(string problem, int line) => new(problem, line);

    private Dictionary<string, object?> MakeGlobals() => new(StringComparer.Ordinal)
    {
        ["raise_exception"] = new JinjaCallable("raise_exception", (a, _) =>
            throw new JinjaRaisedException(a.Count > 0 ? JinjaValues.Str(a[0]) : "the template raised an exception", 0)),
        ["strftime_now"] = new JinjaCallable("strftime_now", (a, _) => Strftime(Now(), a.Count > 0 ? JinjaValues.Str(a[0]) : "")),
        ["range"] = new JinjaCallable("range", (a, _) =>
        {
            long start = 0, stop, step = 1;
            if (a.Count == 1) stop = JinjaValues.ToLong(a[0]);
            else if (a.Count is 2 or 3) { start = JinjaValues.ToLong(a[0]); stop = JinjaValues.ToLong(a[1]); if (a.Count == 3) step = JinjaValues.ToLong(a[2]); }
            else throw new InvalidOperationException("range expects 1 to 3 arguments");
            if (step == 0) throw new InvalidOperationException("range() arg 3 must not be zero");
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
            return list;
        }),
        ["namespace"] = new JinjaCallable("namespace", (a, kw) =>
        {
            var ns = new JinjaNamespace();
            foreach (var x in a) if (x is JinjaDict d) foreach (var (k, v) in d) ns.Values[k] = v;
            foreach (var (k, v) in kw) ns.Values[k] = v;
            return ns;
        }),
        ["dict"] = new JinjaCallable("dict", (a, kw) =>
        {
            var d = new JinjaDict();
            foreach (var x in a) if (x is JinjaDict src) foreach (var (k, v) in src) d[k] = v;
            foreach (var (k, v) in kw) d[k] = v;
            return d;
        }),
    };

    // ---- attribute and item access (Jinja2: a.b tries the attribute, then the item; a[b] the reverse) ----

    public object? GetAttribute(object? target, string name, int line)
    {
        if (target is Undefined u) throw Fail(u.Description, line);
        if (Method(target, name) is JinjaCallable m) return m;
        return target switch
        {
            JinjaDict d => d.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'"),
            JinjaNamespace ns => ns.Values.TryGetValue(name, out var v) ? v : new Undefined($"'Namespace' object has no attribute '{name}'"),
            _ => new Undefined($"'{JinjaValues.TypeName(target)} object' has no attribute '{name}'"),
        };
    }

    public object? GetItem(object? target, object? index, int line)
    {
        switch (target)
        {
            case Undefined u: throw Fail(u.Description, line);
            case JinjaDict d when index is string k:
                return d.TryGetValue(k, out var v) ? v : (object?)Method(d, k) ?? new Undefined($"'dict object' has no attribute '{k}'");
            case JinjaDict d:
                return d.TryGetValue(JinjaValues.Str(index), out var v2) ? v2 : new Undefined($"'dict object' has no attribute {JinjaValues.Repr(index)}");
            case JinjaNamespace ns when index is string k:
                return ns.Values.TryGetValue(k, out var v3) ? v3 : new Undefined($"'Namespace' object has no attribute '{k}'");
            case List<object?> l when JinjaValues.IsInteger(index):
            {
                long i = JinjaValues.ToLong(index);
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : new Undefined($"list object has no element {JinjaValues.ToLong(index)}");
            }
            case string s when JinjaValues.IsInteger(index):
            {
                var chars = JinjaRenderer.StringChars(s).ToList();
                long i = JinjaValues.ToLong(index);
                if (i < 0) i += chars.Count;
                return i >= 0 && i < chars.Count ? chars[(int)i] : new Undefined($"string index {JinjaValues.ToLong(index)} out of range");
            }
        }
        if (index is string name) return GetAttribute(target, name, line);
        return new Undefined($"'{JinjaValues.TypeName(target)} object' has no attribute {JinjaValues.Repr(index)}");
    }

    public static object? Slice(object? target, object? start, object? stop, object? step, int line)
    {
        long? S(object? v) => v is null or Undefined ? null : JinjaValues.ToLong(v);
        List<object?> items = target switch
        {
            List<object?> l => l,
            string s => JinjaRenderer.StringChars(s).ToList(),
            Undefined u => throw Fail(u.Description, line),
            _ => throw Fail($"'{JinjaValues.TypeName(target)}' object is not subscriptable", line),
        };
        int n = items.Count;
        long st = S(step) ?? 1;
        if (st == 0) throw Fail("slice step cannot be zero", line);
        long Clamp(long? v, long def, bool forward)
        {
            if (v is not long x) return def;
            if (x < 0) x += n;
            return forward ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        var result = new List<object?>();
        if (st > 0)
            for (long i = Clamp(S(start), 0, true), end = Clamp(S(stop), n, true); i < end; i += st) result.Add(items[(int)i]);
        else
            for (long i = Clamp(S(start), n - 1, false), end = Clamp(S(stop), -1, false); i > end; i += st) result.Add(items[(int)i]);
        return target is string ? string.Concat(result.Select(JinjaValues.Str)) : result;
    }

    // ---- operators ----

    public static bool Contains(object? container, object? item, int line) => container switch
    {
        string s when item is string sub => s.Contains(sub, StringComparison.Ordinal),
        string => throw Fail($"'in <string>' requires string as left operand, not {JinjaValues.TypeName(item)}", line),
        List<object?> l => l.Any(x => JinjaValues.AreEqual(x, item)),
        JinjaDict d => item is string k && d.ContainsKey(k),
        JinjaNamespace ns => item is string k2 && ns.Values.ContainsKey(k2),
        Undefined => false,
        _ => throw Fail($"argument of type '{JinjaValues.TypeName(container)}' is not iterable", line),
    };

    public static object? Arithmetic(string op, object? a, object? b, int line)
    {
        if (a is Undefined ua) throw Fail(ua.Description, line);
        if (b is Undefined ub) throw Fail(ub.Description, line);
        switch (op)
        {
            case "+" when a is string s && b is string t: return s + t;
            case "+" when a is List<object?> l && b is List<object?> m: return l.Concat(m).ToList();
            case "*" when a is string s && JinjaValues.IsInteger(b): return Repeat(s, JinjaValues.ToLong(b));
            case "*" when b is string s && JinjaValues.IsInteger(a): return Repeat(s, JinjaValues.ToLong(a));
            case "*" when a is List<object?> l && JinjaValues.IsInteger(b):
                return Enumerable.Range(0, (int)Math.Max(0, JinjaValues.ToLong(b))).SelectMany(_ => l).ToList();
        }
        if (!JinjaValues.IsNumber(a) || !JinjaValues.IsNumber(b))
            throw Fail(op == "+" && a is string
                ? $"can only concatenate str (not \"{JinjaValues.TypeName(b)}\") to str"
                : $"unsupported operand type(s) for {op}: '{JinjaValues.TypeName(a)}' and '{JinjaValues.TypeName(b)}'", line);
        bool ints = JinjaValues.IsInteger(a) && JinjaValues.IsInteger(b);
        if (ints)
        {
            long x = JinjaValues.ToLong(a), y = JinjaValues.ToLong(b);
            switch (op)
            {
                case "+": return x + y;
                case "-": return x - y;
                case "*": return x * y;
                case "/": if (y == 0) throw Fail("division by zero", line); return (double)x / y;
                case "//": if (y == 0) throw Fail("integer division or modulo by zero", line); return FloorDiv(x, y);
                case "%": if (y == 0) throw Fail("integer division or modulo by zero", line); return x - y * FloorDiv(x, y);
                case "**": return y >= 0 ? (object)(long)Math.Pow(x, y) : Math.Pow(x, y);
            }
        }
        double p = JinjaValues.ToDouble(a), q = JinjaValues.ToDouble(b);
        switch (op)
        {
            case "+": return p + q;
            case "-": return p - q;
            case "*": return p * q;
            case "/": if (q == 0) throw Fail("float division by zero", line); return p / q;
            case "//": if (q == 0) throw Fail("float floor division by zero", line); return Math.Floor(p / q);
            case "%": if (q == 0) throw Fail("float modulo", line); return p - q * Math.Floor(p / q);
            case "**": return Math.Pow(p, q);
        }
        throw Fail($"unknown operator '{op}'", line);
    }

    private static long FloorDiv(long x, long y) { long q = x / y; return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q; }
    private static string Repeat(string s, long n) => n <= 0 ? "" : new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();

    // ---- methods of str, dict and list ----

    private static JinjaCallable M(string name, JinjaFunction f) => new(name, f);
    private static string? Arg(IReadOnlyList<object?> a, int i) => i < a.Count && a[i] is not null and not Undefined ? JinjaValues.Str(a[i]) : null;

    private JinjaCallable? Method(object? target, string name)
    {
        switch (target)
        {
            case string s:
                return name switch
                {
                    "strip" => M(name, (a, _) => PyStrip(s, Arg(a, 0), true, true)),
                    "lstrip" => M(name, (a, _) => PyStrip(s, Arg(a, 0), true, false)),
                    "rstrip" => M(name, (a, _) => PyStrip(s, Arg(a, 0), false, true)),
                    "upper" => M(name, (_, _) => s.ToUpperInvariant()),
                    "lower" => M(name, (_, _) => s.ToLowerInvariant()),
                    "title" => M(name, (_, _) => PyTitle(s)),
                    "capitalize" => M(name, (_, _) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant()),
                    "startswith" => M(name, (a, _) => Affix(a, p => s.StartsWith(p, StringComparison.Ordinal))),
                    "endswith" => M(name, (a, _) => Affix(a, p => s.EndsWith(p, StringComparison.Ordinal))),
                    "split" => M(name, (a, kw) => PySplit(s, Arg(a, 0) ?? KwStr(kw, "sep"), a.Count > 1 ? JinjaValues.ToLong(a[1]) : kw.TryGetValue("maxsplit", out var mx) ? JinjaValues.ToLong(mx) : -1, false)),
                    "rsplit" => M(name, (a, kw) => PySplit(s, Arg(a, 0) ?? KwStr(kw, "sep"), a.Count > 1 ? JinjaValues.ToLong(a[1]) : kw.TryGetValue("maxsplit", out var mx) ? JinjaValues.ToLong(mx) : -1, true)),
                    "splitlines" => M(name, (_, _) => s.Split('\n').Select(x => (object?)x.TrimEnd('\r')).ToList() is var l && s.EndsWith('\n') ? l.Take(l.Count - 1).ToList() : s.Split('\n').Select(x => (object?)x).ToList()),
                    "replace" => M(name, (a, _) => PyReplace(s, Arg(a, 0) ?? "", Arg(a, 1) ?? "", a.Count > 2 ? JinjaValues.ToLong(a[2]) : -1)),
                    "find" => M(name, (a, _) => (long)s.IndexOf(Arg(a, 0) ?? "", StringComparison.Ordinal)),
                    "rfind" => M(name, (a, _) => (long)s.LastIndexOf(Arg(a, 0) ?? "", StringComparison.Ordinal)),
                    "count" => M(name, (a, _) => (long)CountOccurrences(s, Arg(a, 0) ?? "")),
                    "join" => M(name, (a, _) => string.Join(s, (a.Count > 0 ? a[0] as List<object?> ?? [] : []).Select(JinjaValues.Str))),
                    "isdigit" => M(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
                    "isalpha" => M(name, (_, _) => s.Length > 0 && s.All(char.IsLetter)),
                    "isspace" => M(name, (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
                    "islower" => M(name, (_, _) => s.Any(char.IsLetter) && !s.Any(char.IsUpper)),
                    "isupper" => M(name, (_, _) => s.Any(char.IsLetter) && !s.Any(char.IsLower)),
                    "format" => M(name, (a, kw) => PyFormat(s, a, kw)),
                    _ => null,
                };
            case JinjaDict d:
                return name switch
                {
                    "get" => M(name, (a, _) => a.Count > 0 && a[0] is string k && d.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null),
                    "items" => M(name, (_, _) => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList()),
                    "keys" => M(name, (_, _) => d.Keys.Select(k => (object?)k).ToList()),
                    "values" => M(name, (_, _) => d.Values.ToList()),
                    _ => null,
                };
            case List<object?> l:
                return name switch
                {
                    "index" => M(name, (a, _) => (long)l.FindIndex(x => JinjaValues.AreEqual(x, a.Count > 0 ? a[0] : null)) is var i && i >= 0 ? i : throw new InvalidOperationException("value is not in list")),
                    "count" => M(name, (a, _) => (long)l.Count(x => JinjaValues.AreEqual(x, a.Count > 0 ? a[0] : null))),
                    _ => null,
                };
        }
        return null;
    }

    private static string? KwStr(IReadOnlyDictionary<string, object?> kw, string k) => kw.TryGetValue(k, out var v) && v is string s ? s : null;

    private static bool Affix(IReadOnlyList<object?> a, Func<string, bool> test) => a.Count > 0 && a[0] switch
    {
        string p => test(p),
        List<object?> ps => ps.Any(p => p is string q && test(q)),
        _ => throw new InvalidOperationException($"startswith/endswith first arg must be str or a tuple of str, not {JinjaValues.TypeName(a[0])}"),
    };

    public static string PyStrip(string s, string? chars, bool left, bool right)
    {
        Func<char, bool> strip = chars is null ? char.IsWhiteSpace : chars.Contains;
        int a = 0, b = s.Length;
        if (left) while (a < b && strip(s[a])) a++;
        if (right) while (b > a && strip(s[b - 1])) b--;
        return s[a..b];
    }

    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    private static List<object?> PySplit(string s, string? sep, long max, bool fromRight)
    {
        if (sep is { Length: 0 }) throw new InvalidOperationException("empty separator");
        List<string> parts;
        if (sep is null)
        {
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).ToList();
            if (max < 0 || words.Count <= max + 1) return words.Cast<object?>().ToList();
            // Python keeps the remainder (with its inner whitespace) as the last/first part.
            if (!fromRight)
            {
                var head = new List<object?>();
                string rest = s.TrimStart();
                for (int i = 0; i < max; i++)
                {
                    int ws = rest.IndexOfAny([' ', '\t', '\n', '\r', '\f', '\v']);
                    head.Add(rest[..ws]);
                    rest = rest[ws..].TrimStart();
                }
                head.Add(rest);
                return head;
            }
            var tail = new List<object?>();
            string r = s.TrimEnd();
            for (int i = 0; i < max; i++)
            {
                int ws = r.LastIndexOfAny([' ', '\t', '\n', '\r', '\f', '\v']);
                tail.Insert(0, r[(ws + 1)..]);
                r = r[..ws].TrimEnd();
            }
            tail.Insert(0, r);
            return tail;
        }
        parts = s.Split(sep).ToList();
        if (max >= 0 && parts.Count > max + 1)
        {
            if (!fromRight) parts = [.. parts.Take((int)max), string.Join(sep, parts.Skip((int)max))];
            else parts = [string.Join(sep, parts.Take(parts.Count - (int)max)), .. parts.Skip(parts.Count - (int)max)];
        }
        return parts.Cast<object?>().ToList();
    }

    private static string PyReplace(string s, string old, string @new, long count)
    {
        if (count < 0) return old.Length == 0 ? string.Concat(s.Select(c => @new + c)) + @new : s.Replace(old, @new, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int pos = 0;
        for (long n = 0; n < count; n++)
        {
            int i = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0 || old.Length == 0) break;
            sb.Append(s, pos, i - pos).Append(@new);
            pos = i + old.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    private static int CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        int n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>str.format with {} / {0} / {name} fields (no format specs beyond plain conversion).</summary>
    private static string PyFormat(string s, IReadOnlyList<object?> a, IReadOnlyDictionary<string, object?> kw)
    {
        int auto = 0;
        return Regex.Replace(s.Replace("{{", "\u0001").Replace("}}", "\u0002"), @"\{([^{}]*)\}", m =>
        {
            string f = m.Groups[1].Value;
            int colon = f.IndexOf(':');
            if (colon >= 0) f = f[..colon];
            object? v = f.Length == 0 ? a[auto++] : int.TryParse(f, out int i) ? a[i] : kw.TryGetValue(f, out var x) ? x : throw new InvalidOperationException($"format: no argument '{f}'");
            return JinjaValues.Str(v);
        }).Replace('\u0001', '{').Replace('\u0002', '}');
    }

    // ---- filters ----

    internal object? Filter(string name, object? v, List<object?> a, Dictionary<string, object?> kw, int line, JinjaRenderer r)
    {
        object? A(int i, string key, object? def = null) => i < a.Count ? a[i] : kw.TryGetValue(key, out var x) ? x : def;
        void Defined() { if (v is Undefined u) throw Fail(u.Description, line); }
        switch (name)
        {
            case "tojson":
            {
                Defined();
                var ind = A(0, "indent");
                var seps = kw.TryGetValue("separators", out var sp) && sp is List<object?> { Count: 2 } pair ? pair : null;
                return JinjaValues.ToJson(v, ind is null or Undefined ? null : (int)JinjaValues.ToLong(ind),
                    ensureAscii: JinjaValues.Truthy(A(99, "ensure_ascii", false)),
                    itemSep: seps is null ? null : JinjaValues.Str(seps[0]), keySep: seps is null ? null : JinjaValues.Str(seps[1]),
                    sortKeys: JinjaValues.Truthy(A(99, "sort_keys", false)));
            }
            case "trim":
                return A(0, "chars") is string chars ? PyStrip(JinjaValues.Str(v), chars, true, true) : JinjaValues.Str(v).Trim();
            case "upper": return JinjaValues.Str(v).ToUpperInvariant();
            case "lower": return JinjaValues.Str(v).ToLowerInvariant();
            case "capitalize": { var s = JinjaValues.Str(v); return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(); }
            case "title":
                // Jinja2's do_title: words start after whitespace, '-', or an opening bracket.
                return string.Concat(Regex.Split(JinjaValues.Str(v), @"([-\s\(\{\[\<]+)").Where(p => p.Length > 0)
                    .Select(p => char.ToUpperInvariant(p[0]) + p[1..].ToLowerInvariant()));
            case "length" or "count":
                return v switch
                {
                    string s => (long)JinjaRenderer.StringChars(s).Count(),
                    List<object?> l => (long)l.Count,
                    JinjaDict d => (long)d.Count,
                    JinjaNamespace ns => (long)ns.Values.Count,
                    Undefined => 0L,
                    _ => throw Fail($"object of type '{JinjaValues.TypeName(v)}' has no len()", line),
                };
            case "first": { var l = r.Iterate(v, line).ToList(); return l.Count > 0 ? l[0] : new Undefined("No first item, sequence was empty."); }
            case "last": { var l = r.Iterate(v, line).ToList(); return l.Count > 0 ? l[^1] : new Undefined("No last item, sequence was empty."); }
            case "join":
            {
                string sep = A(0, "d", "") is var s0 && s0 is not null and not Undefined ? JinjaValues.Str(s0) : "";
                var items = r.Iterate(v, line);
                if (kw.TryGetValue("attribute", out var attr)) items = items.Select(x => GetItem(x, attr, line));
                return string.Join(sep, items.Select(JinjaValues.Str));
            }
            case "replace":
                return PyReplace(JinjaValues.Str(v), JinjaValues.Str(A(0, "old")), JinjaValues.Str(A(1, "new")), A(2, "count") is long c ? c : -1);
            case "default" or "d":
            {
                bool boolean = JinjaValues.Truthy(A(1, "boolean", false));
                if (v is Undefined || (boolean && !JinjaValues.Truthy(v))) return A(0, "default_value", "");
                return v;
            }
            case "items":
                if (v is Undefined) return new List<object?>();
                if (v is not JinjaDict dict) throw Fail($"can only get item pairs from a mapping, not {JinjaValues.TypeName(v)}", line);
                return dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList();
            case "list": return r.Iterate(v, line).ToList();
            case "string": return JinjaValues.Str(v);
            case "safe" or "e" or "escape" when name == "safe": return v is string ? v : JinjaValues.Str(v);
            case "e" or "escape":
                return JinjaValues.Str(v).Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");
            case "int":
            {
                object? def = A(0, "default", 0L);
                return v switch
                {
                    long or bool => JinjaValues.ToLong(v),
                    double d => (long)Math.Truncate(d),
                    string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) => l,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d2) => (long)Math.Truncate(d2),
                    _ => def,
                };
            }
            case "float":
            {
                object? def = A(0, "default", 0.0);
                return v switch
                {
                    long or bool or double => JinjaValues.ToDouble(v),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
                    _ => def,
                };
            }
            case "abs":
                Defined();
                return v switch { long l => (object)Math.Abs(l), double d => (object)Math.Abs(d), bool b => (object)(b ? 1L : 0L), _ => throw Fail($"bad operand type for abs(): '{JinjaValues.TypeName(v)}'", line) };
            case "round":
            {
                Defined();
                int precision = (int)JinjaValues.ToLong(A(0, "precision", 0L));
                string method = JinjaValues.Str(A(1, "method", "common"));
                double x = JinjaValues.ToDouble(v), f = Math.Pow(10, precision);
                return method switch
                {
                    "ceil" => Math.Ceiling(x * f) / f,
                    "floor" => Math.Floor(x * f) / f,
                    _ => Math.Round(x * f, MidpointRounding.AwayFromZero) / f,
                };
            }
            case "indent":
            {
                object? w = A(0, "width", 4L);
                string pad = w is string ws ? ws : new string(' ', (int)JinjaValues.ToLong(w));
                bool first = JinjaValues.Truthy(A(1, "first", false)), blank = JinjaValues.Truthy(A(2, "blank", false));
                string s = JinjaValues.Str(v);
                var lines = s.Split('\n');
                var sb = new StringBuilder();
                for (int i = 0; i < lines.Length; i++)
                {
                    if (i > 0) sb.Append('\n');
                    bool indentThis = i == 0 ? first : (blank || lines[i].Length > 0);
                    if (indentThis) sb.Append(pad);
                    sb.Append(lines[i]);
                }
                return sb.ToString();
            }
            case "unique":
            {
                var seen = new List<object?>();
                foreach (var x in r.Iterate(v, line)) if (!seen.Any(y => JinjaValues.AreEqual(x, y))) seen.Add(x);
                return seen;
            }
            case "reverse":
                return v is string rs ? string.Concat(JinjaRenderer.StringChars(rs).Reverse().Select(JinjaValues.Str)) : r.Iterate(v, line).Reverse().ToList();
            case "sort":
            {
                bool reverse = JinjaValues.Truthy(A(0, "reverse", false));
                var attribute = A(2, "attribute");
                var items = r.Iterate(v, line).ToList();
                Func<object?, object?> key = attribute is null ? x => x : x => GetItem(x, attribute, line);
                var sorted = items.Order(Comparer<object?>.Create((x, y) => JinjaValues.Compare(key(x), key(y), "<"))).ToList();
                if (reverse) sorted.Reverse();
                return sorted;
            }
            case "dictsort":
            {
                if (v is not JinjaDict dd) throw Fail("dictsort needs a mapping", line);
                bool byValue = JinjaValues.Str(A(1, "by", "key")) == "value";
                bool reverse = JinjaValues.Truthy(A(2, "reverse", false));
                var pairs = dd.Select(kv => (object?)new List<object?> { kv.Key, kv.Value })
                    .Order(Comparer<object?>.Create((x, y) => JinjaValues.Compare(((List<object?>)x!)[byValue ? 1 : 0], ((List<object?>)y!)[byValue ? 1 : 0], "<"))).ToList();
                if (reverse) pairs.Reverse();
                return pairs;
            }
            case "sum": return r.Iterate(v, line).Aggregate(A(1, "start", 0L), (acc, x) => Arithmetic("+", acc, x, line));
            case "min": return r.Iterate(v, line).DefaultIfEmpty(new Undefined("min of an empty sequence")).Aggregate((x, y) => JinjaValues.Compare(x, y, "<") <= 0 ? x : y);
            case "max": return r.Iterate(v, line).DefaultIfEmpty(new Undefined("max of an empty sequence")).Aggregate((x, y) => JinjaValues.Compare(x, y, ">") >= 0 ? x : y);
            case "selectattr" or "rejectattr":
            {
                bool select = name == "selectattr";
                if (a.Count == 0) throw Fail($"{name} needs an attribute name", line);
                var attr = a[0];
                string? test = a.Count > 1 ? JinjaValues.Str(a[1]) : null;
                var rest = a.Skip(2).ToList();
                return r.Iterate(v, line).Where(x =>
                {
                    var val = GetAttributeOrItem(x, attr, line);
                    bool ok = test is null ? JinjaValues.Truthy(val) : Test(test, val, rest, line);
                    return ok == select;
                }).ToList();
            }
            case "select" or "reject":
            {
                bool select = name == "select";
                string? test = a.Count > 0 ? JinjaValues.Str(a[0]) : null;
                var rest = a.Skip(1).ToList();
                return r.Iterate(v, line).Where(x => (test is null ? JinjaValues.Truthy(x) : Test(test, x, rest, line)) == select).ToList();
            }
            case "map":
            {
                if (kw.TryGetValue("attribute", out var attr))
                {
                    bool hasDefault = kw.TryGetValue("default", out var def);
                    return r.Iterate(v, line).Select(x =>
                    {
                        var val = GetAttributeOrItem(x, attr, line);
                        return val is Undefined && hasDefault ? def : val;
                    }).ToList();
                }
                if (a.Count == 0) throw Fail("map needs a filter name or attribute=", line);
                string filter = JinjaValues.Str(a[0]);
                var fargs = a.Skip(1).ToList();
                return r.Iterate(v, line).Select(x => Filter(filter, x, fargs, kw, line, r)).ToList();
            }
            case "wordcount": return (long)Regex.Matches(JinjaValues.Str(v), @"\w+").Count;
            case "center":
            {
                string s = JinjaValues.Str(v);
                int width = (int)JinjaValues.ToLong(A(0, "width", 80L));
                if (s.Length >= width) return s;
                int total = width - s.Length, left = total / 2 + (total % 2 & width % 2);
                return new string(' ', left) + s + new string(' ', total - left);
            }
            case "batch":
            {
                int size = (int)JinjaValues.ToLong(A(0, "linecount"));
                return r.Iterate(v, line).Chunk(size).Select(c => (object?)c.ToList()).ToList();
            }
            case "attr": return GetAttribute(v, JinjaValues.Str(A(0, "name")), line);
            case "pprint": return JinjaValues.Repr(v);
            default:
                throw Fail($"unknown filter '{name}'", line);
        }
    }

    private object? GetAttributeOrItem(object? x, object? attr, int line)
    {
        // "function.name": a dotted path, as Jinja2's make_attrgetter.
        if (attr is string s && s.Contains('.'))
        {
            object? cur = x;
            foreach (var part in s.Split('.'))
            {
                if (cur is Undefined) return cur;
                cur = GetItem(cur, long.TryParse(part, out var n) ? n : part, line);
            }
            return cur;
        }
        return x is Undefined ? x : GetItem(x, attr, line);
    }

    // ---- tests ----

    public bool Test(string name, object? v, IReadOnlyList<object?> a, int line)
    {
        object? Arg0() => a.Count > 0 ? a[0] : throw Fail($"test '{name}' needs an argument", line);
        switch (name)
        {
            case "defined": return v is not Undefined;
            case "undefined": return v is Undefined;
            case "none": return v is null;
            case "string": return v is string;
            case "mapping": return v is JinjaDict or JinjaNamespace;
            case "iterable": return v is string or List<object?> or JinjaDict or Undefined;
            case "sequence": return v is string or List<object?> or JinjaDict;
            case "number": return v is long or double or bool;
            case "integer": return v is long;
            case "float": return v is double;
            case "boolean": return v is bool;
            case "true": return v is true;
            case "false": return v is false;
            case "callable": return v is JinjaCallable;
            case "odd": return JinjaValues.ToLong(v) % 2 != 0;
            case "even": return JinjaValues.ToLong(v) % 2 == 0;
            case "divisibleby": return JinjaValues.ToLong(v) % JinjaValues.ToLong(Arg0()) == 0;
            case "lower": return v is string ls && ls == ls.ToLowerInvariant();
            case "upper": return v is string us && us == us.ToUpperInvariant();
            case "equalto" or "eq" or "==": return JinjaValues.AreEqual(v, Arg0());
            case "ne" or "!=": return !JinjaValues.AreEqual(v, Arg0());
            case "sameas": return v is null ? Arg0() is null : v is bool b ? Arg0() is bool c && b == c : ReferenceEquals(v, Arg0()) || (v is string && JinjaValues.AreEqual(v, Arg0()) && false);
            case "lt" or "lessthan" or "<": return JinjaValues.Compare(v, Arg0(), "<") < 0;
            case "le" or "<=": return JinjaValues.Compare(v, Arg0(), "<=") <= 0;
            case "gt" or "greaterthan" or ">": return JinjaValues.Compare(v, Arg0(), ">") > 0;
            case "ge" or ">=": return JinjaValues.Compare(v, Arg0(), ">=") >= 0;
            case "in": return Contains(Arg0(), v, line);
            default: throw Fail($"unknown test '{name}'", line);
        }
    }

    // ---- strftime_now ----

    /// <summary>Python's strftime for the directives chat templates use (dates in system prompts).</summary>
    public static string Strftime(DateTime t, string format)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char d = format[++i];
            bool noPad = d == '-' && i + 1 < format.Length;
            if (noPad) d = format[++i];
            string Two(int x) => noPad ? x.ToString(inv) : x.ToString("00", inv);
            sb.Append(d switch
            {
                'd' => Two(t.Day),
                'm' => Two(t.Month),
                'Y' => t.Year.ToString(inv),
                'y' => (t.Year % 100).ToString("00", inv),
                'H' => Two(t.Hour),
                'I' => Two(t.Hour % 12 == 0 ? 12 : t.Hour % 12),
                'M' => Two(t.Minute),
                'S' => Two(t.Second),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'B' => t.ToString("MMMM", inv),
                'b' or 'h' => t.ToString("MMM", inv),
                'A' => t.ToString("dddd", inv),
                'a' => t.ToString("ddd", inv),
                'j' => noPad ? t.DayOfYear.ToString(inv) : t.DayOfYear.ToString("000", inv),
                'e' => t.Day.ToString(inv).PadLeft(2),
                'F' => t.ToString("yyyy-MM-dd", inv),
                'T' => t.ToString("HH:mm:ss", inv),
                '%' => "%",
                _ => "%" + d,
            });
        }
        return sb.ToString();
    }
}
