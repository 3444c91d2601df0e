using System.Text;

namespace FineAlign.Text.Jinja;

/// <summary>A character range [Start, End) of rendered output.</summary>
public readonly record struct TextSpan(int Start, int End)
{
    public int Length => End - Start;
}

/// <summary>What a render produced: the text and the spans written inside <c>{% generation %}</c> blocks.</summary>
public sealed record RenderResult(string Text, IReadOnlyList<TextSpan> GenerationSpans);

/// <summary>
/// Walks the syntax tree. Scopes follow Jinja2: a for-loop body and a macro get their own scope (a <c>set</c> inside
/// does not leak out, which is why templates use namespace()); if-blocks share the enclosing one.
/// </summary>
internal sealed class JinjaRenderer
{
    private sealed class Scope(Scope? parent)
    {
        private readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);
        public Scope? Parent { get; } = parent;
        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s._vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
        public void Set(string name, object? value) => _vars[name] = value;
    }

    private sealed class BreakSignal : Exception;
    private sealed class ContinueSignal : Exception;

    private readonly StringBuilder _out = new();
    private readonly List<TextSpan> _spans = new();
    private readonly JinjaBuiltins _builtins;

    public JinjaRenderer(JinjaBuiltins builtins) { _builtins = builtins; }

    public RenderResult Render(IReadOnlyList<Node> program, IReadOnlyDictionary<string, object?> variables)
    {
        var globals = new Scope(null);
        foreach (var (k, v) in _builtins.Globals) globals.Set(k, v);
        var top = new Scope(globals);
        foreach (var (k, v) in variables) top.Set(k, v);
        Exec(program, top);
        return new RenderResult(_out.ToString(), _spans.ToArray());
    }

    private void Exec(IReadOnlyList<Node> nodes, Scope scope)
    {
        foreach (var n in nodes) Exec(n, scope);
    }

    private void Exec(Node node, Scope scope)
    {
        switch (node)
        {
            case TextNode t: _out.Append(t.Text); break;
            case OutputNode o: _out.Append(JinjaValues.Str(Eval(o.Value, scope))); break;
            case IfNode i:
                foreach (var (test, body) in i.Branches)
                    if (JinjaValues.Truthy(Eval(test, scope))) { Exec(body, scope); return; }
                if (i.Else is not null) Exec(i.Else, scope);
                break;
            case ForNode f: ExecFor(f, scope); break;
            case SetNode s:
            {
                var value = Eval(s.Value, scope);
                if (s.Attribute is string attr)
                {
                    if (!scope.TryGet(s.Targets[0], out var target) || target is not JinjaNamespace ns)
                        throw Fail($"cannot assign attribute '{attr}' on '{s.Targets[0]}': only a namespace() allows it", s.Line);
                    ns.Values[attr] = value;
                }
                else Assign(s.Targets, value, scope, s.Line);
                break;
            }
            case SetBlockNode sb:
                scope.Set(sb.Target, Capture(sb.Body, scope));
                break;
            case MacroNode m: scope.Set(m.Name, MakeMacro(m, scope)); break;
            case GenerationNode g:
            {
                int start = _out.Length;
                Exec(g.Body, scope);
                if (_out.Length > start) _spans.Add(new TextSpan(start, _out.Length));
                break;
            }
            case BreakNode: throw new BreakSignal();
            case ContinueNode: throw new ContinueSignal();
            default: throw Fail($"cannot execute {node.GetType().Name}", node.Line);
        }
    }

    private string Capture(IReadOnlyList<Node> body, Scope scope)
    {
        int start = _out.Length, spans = _spans.Count;
        Exec(body, scope);
        string s = _out.ToString(start, _out.Length - start);
        _out.Length = start;
        if (_spans.Count > spans) _spans.RemoveRange(spans, _spans.Count - spans);
        return s;
    }

    private void Assign(IReadOnlyList<string> targets, object? value, Scope scope, int line)
    {
        if (targets.Count == 1) { scope.Set(targets[0], value); return; }
        var items = Iterate(value, line).ToList();
        if (items.Count != targets.Count)
            throw Fail($"cannot unpack {items.Count} values into {targets.Count} names", line);
        for (int i = 0; i < targets.Count; i++) scope.Set(targets[i], items[i]);
    }

    private void ExecFor(ForNode f, Scope scope)
    {
        var source = Eval(f.Iterable, scope);
        var all = Iterate(source, f.Line).ToList();
        var items = new List<object?>(all.Count);
        if (f.Filter is null) items = all;
        else
            foreach (var it in all)
            {
                var s = new Scope(scope);
                Assign(f.Targets, it, s, f.Line);
                if (JinjaValues.Truthy(Eval(f.Filter, s))) items.Add(it);
            }
        if (items.Count == 0)
        {
            if (f.Else is not null) Exec(f.Else, scope);
            return;
        }
        for (int i = 0; i < items.Count; i++)
        {
            var s = new Scope(scope);
            Assign(f.Targets, items[i], s, f.Line);
            s.Set("loop", LoopObject(items, i));
            try { Exec(f.Body, s); }
            catch (BreakSignal) { break; }
            catch (ContinueSignal) { }
        }
    }

    private static JinjaDict LoopObject(List<object?> items, int i)
    {
        int n = items.Count;
        var loop = new JinjaDict
        {
            ["index"] = (long)(i + 1), ["index0"] = (long)i, ["revindex"] = (long)(n - i), ["revindex0"] = (long)(n - i - 1),
            ["first"] = i == 0, ["last"] = i == n - 1, ["length"] = (long)n, ["depth"] = 1L, ["depth0"] = 0L,
            ["previtem"] = i > 0 ? items[i - 1] : new Undefined("there is no previous item"),
            ["nextitem"] = i < n - 1 ? items[i + 1] : new Undefined("there is no next item"),
        };
        loop["cycle"] = new JinjaCallable("loop.cycle", (a, _) => a.Count == 0 ? null : a[i % a.Count]);
        return loop;
    }

    private JinjaCallable MakeMacro(MacroNode m, Scope definedIn) => new(m.Name, (args, kwargs) =>
    {
        if (args.Count > m.Parameters.Count) throw Fail($"macro '{m.Name}' takes {m.Parameters.Count} arguments, got {args.Count}", m.Line);
        var s = new Scope(definedIn);
        for (int i = 0; i < m.Parameters.Count; i++)
        {
            var (name, def) = m.Parameters[i];
            object? v = i < args.Count ? args[i]
                : kwargs.TryGetValue(name, out var kv) ? kv
                : def is not null ? Eval(def, s)
                : new Undefined($"'{name}' is undefined (macro '{m.Name}' argument)");
            s.Set(name, v);
        }
        foreach (var k in kwargs.Keys)
            if (!m.Parameters.Any(p => p.Name == k)) throw Fail($"macro '{m.Name}' has no argument '{k}'", m.Line);
        return Capture(m.Body, s);
    });

    internal IEnumerable<object?> Iterate(object? v, int line) => v switch
    {
        List<object?> l => l,
        JinjaDict d => d.Keys.Cast<object?>(),
        string s => StringChars(s),
        Undefined => [],
        JinjaNamespace ns => ns.Values.Keys.Cast<object?>(),
        _ => throw Fail($"'{JinjaValues.TypeName(v)}' object is not iterable", line),
    };

    internal static IEnumerable<object?> StringChars(string s)
    {
        for (int i = 0; i < s.Length;)
        {
            int len = char.IsSurrogatePair(s, i) ? 2 : 1;
            yield return s.Substring(i, len);
            i += len;
        }
    }

    internal static JinjaException Fail(string problem, int line) => new(problem, line);

    // ---- expressions ----

    private object? Eval(Expr e, Scope scope)
    {
        try { return EvalCore(e, scope); }
        catch (InvalidOperationException x) { throw Fail(x.Message, e.Line); }
        catch (ArgumentException x) { throw Fail(x.Message, e.Line); }
    }

    private object? EvalCore(Expr e, Scope scope)
    {
        switch (e)
        {
            case Literal l: return l.Value;
            case NameExpr n:
                return scope.TryGet(n.Name, out var v) ? v : new Undefined($"'{n.Name}' is undefined");
            case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
            case TupleExpr t: return t.Items.Select(x => Eval(x, scope)).ToList();
            case DictExpr d:
            {
                var dict = new JinjaDict();
                foreach (var (k, val) in d.Items) dict[KeyString(Eval(k, scope), d.Line)] = Eval(val, scope);
                return dict;
            }
            case AttributeExpr a: return _builtins.GetAttribute(Eval(a.Target, scope), a.Name, a.Line);
            case ItemExpr i: return _builtins.GetItem(Eval(i.Target, scope), Eval(i.Index, scope), i.Line);
            case SliceExpr s:
                return JinjaBuiltins.Slice(Eval(s.Target, scope), s.Start is null ? null : Eval(s.Start, scope),
                    s.Stop is null ? null : Eval(s.Stop, scope), s.Step is null ? null : Eval(s.Step, scope), s.Line);
            case CallExpr c:
            {
                var f = Eval(c.Function, scope);
                var args = c.Args.Select(x => Eval(x, scope)).ToList();
                var kwargs = c.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope));
                if (f is JinjaCallable fn) return fn.Invoke(args, kwargs);
                if (f is Undefined u) throw Fail(u.Description, c.Line);
                throw Fail($"'{JinjaValues.TypeName(f)}' object is not callable", c.Line);
            }
            case FilterExpr f:
            {
                var value = Eval(f.Value, scope);
                var args = f.Args.Select(x => Eval(x, scope)).ToList();
                var kwargs = f.Kwargs.ToDictionary(k => k.Name, k => Eval(k.Value, scope));
                return _builtins.Filter(f.Name, value, args, kwargs, f.Line, this);
            }
            case TestExpr t:
            {
                var value = Eval(t.Value, scope);
                var args = t.Args.Select(x => Eval(x, scope)).ToList();
                bool r = _builtins.Test(t.Name, value, args, t.Line);
                return t.Negated ? !r : r;
            }
            case UnaryExpr u:
            {
                var v2 = Eval(u.Operand, scope);
                return u.Op switch
                {
                    "not" => !JinjaValues.Truthy(v2),
                    "-" => v2 switch
                    {
                        long l => (object)(-l),
                        double d => (object)(-d),
                        bool b => (object)(b ? -1L : 0L),
                        Undefined un => throw Fail(un.Description, u.Line),
                        _ => throw Fail($"bad operand type for unary -: '{JinjaValues.TypeName(v2)}'", u.Line),
                    },
                    _ => JinjaValues.IsNumber(v2) ? v2 : throw Fail($"bad operand type for unary +: '{JinjaValues.TypeName(v2)}'", u.Line),
                };
            }
            case BinaryExpr b:
            {
                if (b.Op == "and") { var l = Eval(b.Left, scope); return JinjaValues.Truthy(l) ? Eval(b.Right, scope) : l; }
                if (b.Op == "or") { var l = Eval(b.Left, scope); return JinjaValues.Truthy(l) ? l : Eval(b.Right, scope); }
                var left = Eval(b.Left, scope);
                var right = Eval(b.Right, scope);
                if (b.Op == "~") return JinjaValues.Str(left) + JinjaValues.Str(right);
                return JinjaBuiltins.Arithmetic(b.Op, left, right, b.Line);
            }
            case CompareExpr c:
            {
                var left = Eval(c.First, scope);
                foreach (var (op, operand) in c.Rest)
                {
                    var right = Eval(operand, scope);
                    if (!CompareOne(op, left, right, c.Line)) return false;
                    left = right;
                }
                return true;
            }
            case ConditionalExpr c:
                return JinjaValues.Truthy(Eval(c.Test, scope)) ? Eval(c.Then, scope)
                    : c.Else is null ? new Undefined("the conditional expression has no else branch") : Eval(c.Else, scope);
            default:
                throw Fail($"cannot evaluate {e.GetType().Name}", e.Line);
        }
    }

    private static string KeyString(object? k, int line) => k switch
    {
        string s => s,
        null or bool or long or double => JinjaValues.Str(k),
        _ => throw Fail($"unhashable dict key of type '{JinjaValues.TypeName(k)}'", line),
    };

    private bool CompareOne(string op, object? a, object? b, int line)
    {
        switch (op)
        {
            case "==": return JinjaValues.AreEqual(a, b);
            case "!=": return !JinjaValues.AreEqual(a, b);
            case "in": return JinjaBuiltins.Contains(b, a, line);
            case "not in": return !JinjaBuiltins.Contains(b, a, line);
        }
        if (a is Undefined ua) throw Fail(ua.Description, line);
        if (b is Undefined ub) throw Fail(ub.Description, line);
        int c = JinjaValues.Compare(a, b, op);
        return op switch { "<" => c < 0, "<=" => c <= 0, ">" => c > 0, _ => c >= 0 };
    }
}
