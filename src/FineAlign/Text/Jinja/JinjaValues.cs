using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Text.Jinja;

/// <summary>
/// Jinja2's default Undefined: prints as empty, is falsy, iterates as empty, has length 0, and is an error when
/// used in arithmetic, called, subscripted, or asked for an attribute.
/// </summary>
public sealed class Undefined
{
    public Undefined(string description) { Description = description; }
    /// <summary>What was missing, for the error message: "'foo' is undefined", "'dict object' has no attribute 'x'".</summary>
    public string Description { get; }
    public override string ToString() => "";
}

/// <summary><c>namespace(...)</c>: the one object whose attributes a template may set (<c>set ns.x = ...</c>).</summary>
public sealed class JinjaNamespace
{
    public Dictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

/// <summary>A callable value: a global function, a bound method, or a macro.</summary>
public delegate object? JinjaFunction(IReadOnlyList<object?> args, IReadOnlyDictionary<string, object?> kwargs);

public sealed record JinjaCallable(string Name, JinjaFunction Invoke);

/// <summary>
/// Value model: null (None), <see cref="Undefined"/>, bool, long, double, string, <c>List&lt;object?&gt;</c> (lists and tuples),
/// <c>JinjaDict</c> (insertion-ordered string-keyed dict), <see cref="JinjaNamespace"/>, <see cref="JinjaCallable"/>.
/// Conversions follow Python, since transformers renders with Python's Jinja2.
/// </summary>
public static class JinjaValues
{
    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        JinjaDict d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        JinjaDict => "dict",
        JinjaNamespace => "Namespace",
        JinjaCallable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Python's <c>str(v)</c> (what <c>{{ v }}</c> prints); undefined prints nothing.</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's <c>repr(v)</c>.</summary>
    public static string Repr(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        JinjaDict d => "{" + string.Join(", ", d.Select(kv => StringRepr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        JinjaNamespace => "<Namespace>",
        JinjaCallable c => $"<function {c.Name}>",
        _ => v.ToString() ?? "",
    };

    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16) return d.ToString("F0", CultureInfo.InvariantCulture) + ".0";
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E');
        if (e < 0) return r;
        // .NET "1E-05" → Python "1e-05"
        string mant = r[..e], exp = r[(e + 1)..];
        char sign = exp[0] == '-' ? '-' : '+';
        exp = exp.TrimStart('+', '-').PadLeft(2, '0');
        return $"{mant}e{sign}{exp}";
    }

    private static string StringRepr(string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(q);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == q) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{(int)c:x2}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(q).ToString();
    }

    /// <summary>Python equality (1 == 1.0, lists and dicts element-wise; two undefined values are equal).</summary>
    public static bool AreEqual(object? a, object? b)
    {
        switch (a, b)
        {
            case (null, null): return true;
            case (Undefined, Undefined): return true;
            case (Undefined, _) or (_, Undefined): return false;
            case (bool x, bool y): return x == y;
            case (string x, string y): return string.Equals(x, y, StringComparison.Ordinal);
            case (List<object?> x, List<object?> y): return x.Count == y.Count && x.Zip(y).All(p => AreEqual(p.First, p.Second));
            case (JinjaDict x, JinjaDict y):
                return x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var o) && AreEqual(kv.Value, o));
        }
        if (IsNumber(a) && IsNumber(b)) return ToDouble(a) == ToDouble(b) && (a is not long la || b is not long lb || la == lb);
        return ReferenceEquals(a, b);
    }

    /// <summary>Python's ordering for numbers and strings; anything else is an error.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (IsNumber(a) && IsNumber(b))
            return a is long x && b is long y ? x.CompareTo(y) : ToDouble(a).CompareTo(ToDouble(b));
        if (a is string s && b is string t) return string.CompareOrdinal(s, t);
        if (a is List<object?> l && b is List<object?> m)
        {
            for (int i = 0; i < Math.Min(l.Count, m.Count); i++)
                if (!AreEqual(l[i], m[i])) return Compare(l[i], m[i], op);
            return l.Count.CompareTo(m.Count);
        }
        throw new InvalidOperationException($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    /// <summary>bool counts as a number, as in Python (True + 1 == 2).</summary>
    public static bool IsNumber(object? v) => v is long or double or bool;
    public static bool IsInteger(object? v) => v is long or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidOperationException($"expected a number, got {TypeName(v)}"),
    };

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => (long)Math.Truncate(d),
        _ => throw new InvalidOperationException($"expected an integer, got {TypeName(v)}"),
    };

    /// <summary>JSON (messages, tools, kwargs) as template values; integral numbers become ints.</summary>
    public static object? FromJson(JsonNode? node) => node switch
    {
        null => null,
        JsonObject o => new JinjaDict(o.Select(kv => new KeyValuePair<string, object?>(kv.Key, FromJson(kv.Value)))),
        JsonArray a => a.Select(FromJson).ToList(),
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => v.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Null => null,
            JsonValueKind.Number => NumberFromJson(v.ToJsonString()),
            _ => v.ToJsonString(),
        },
        _ => null,
    };

    private static object NumberFromJson(string raw) =>
        raw.IndexOfAny(['.', 'e', 'E']) < 0 && long.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l)
            ? (object)l : double.Parse(raw, NumberStyles.Float, CultureInfo.InvariantCulture);

    /// <summary>
    /// transformers' <c>tojson</c>: Python's <c>json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...)</c>,
    /// not Jinja2's HTML-escaping one. Separators default to (", ", ": ") without indent and (",", ": ") with it.
    /// </summary>
    public static string ToJson(object? v, int? indent = null, bool ensureAscii = false, string? itemSep = null, string? keySep = null, bool sortKeys = false)
    {
        var sb = new StringBuilder();
        itemSep ??= indent is null ? ", " : ",";
        keySep ??= ": ";
        Write(v, 0);
        return sb.ToString();

        void Newline(int level)
        {
            if (indent is not int n) return;
            sb.Append('\n').Append(' ', n * level);
        }

        void Write(object? x, int level)
        {
            switch (x)
            {
                case null: sb.Append("null"); break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
                case double d:
                    sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d));
                    break;
                case string s: JsonString(sb, s, ensureAscii); break;
                case List<object?> list:
                    if (list.Count == 0) { sb.Append("[]"); break; }
                    sb.Append('[');
                    for (int i = 0; i < list.Count; i++)
                    {
                        if (i > 0) sb.Append(itemSep);
                        Newline(level + 1);
                        Write(list[i], level + 1);
                    }
                    Newline(level);
                    sb.Append(']');
                    break;
                case JinjaDict dict:
                {
                    if (dict.Count == 0) { sb.Append("{}"); break; }
                    sb.Append('{');
                    var items = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                    for (int i = 0; i < items.Count; i++)
                    {
                        if (i > 0) sb.Append(itemSep);
                        Newline(level + 1);
                        JsonString(sb, items[i].Key, ensureAscii);
                        sb.Append(keySep);
                        Write(items[i].Value, level + 1);
                    }
                    Newline(level);
                    sb.Append('}');
                    break;
                }
                case JinjaNamespace ns: Write(new JinjaDict(ns.Values), level); break;
                default: throw new InvalidOperationException($"Object of type {TypeName(x)} is not JSON serializable");
            }
        }
    }

    private static void JsonString(StringBuilder sb, string s, bool ensureAscii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ensureAscii && c > 0x7f)) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}

/// <summary>A Python dict with string keys, keeping insertion order (tojson and items() depend on it).</summary>
public sealed class JinjaDict : OrderedDictionary<string, object?>
{
    public JinjaDict() : base(StringComparer.Ordinal) { }
    public JinjaDict(IEnumerable<KeyValuePair<string, object?>> items) : base(StringComparer.Ordinal)
    {
        foreach (var (k, v) in items) this[k] = v;
    }
}
