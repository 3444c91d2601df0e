using System.Globalization;

namespace FineAlign.Text.Jinja;

/// <summary>
/// Recursive-descent parser of the Jinja subset chat templates use, with Jinja2's operator precedence:
/// conditional &lt; or &lt; and &lt; not &lt; comparisons/in/is &lt; + - &lt; ~ &lt; * / // % &lt; ** &lt; unary &lt; postfix
/// (attribute, subscript, call) and filters (<c>|</c>) / tests (<c>is</c>), which bind tightest.
/// </summary>
public sealed class JinjaParser
{
    private readonly List<Token> _t;
    private int _i;

    private JinjaParser(List<Token> tokens) { _t = tokens; }

    public static IReadOnlyList<Node> Parse(string source)
    {
        var p = new JinjaParser(JinjaLexer.Tokenize(source));
        var body = p.ParseBody(out var end);
        if (end is not null) throw p.Error($"unexpected '{{% {end} %}}' with no block to close", p.Peek(-1));
        return body;
    }

    private Token Peek(int ahead = 0) => _t[Math.Clamp(_i + ahead, 0, _t.Count - 1)];
    private Token Next() => _t[_i < _t.Count - 1 ? _i++ : _i];
    private JinjaException Error(string problem, Token at) => new(problem, at.Line, at.Column);
    private bool IsOp(string op) => Peek().Is(TokenKind.Operator, op);
    private bool IsName(string n) => Peek().Is(TokenKind.Name, n);

    private Token Expect(TokenKind kind, string? value = null)
    {
        var t = Peek();
        if (t.Kind != kind || (value is not null && t.Value != value))
            throw Error($"expected {(value is not null ? $"'{value}'" : kind.ToString().ToLowerInvariant())}, got {t}", t);
        return Next();
    }

    private bool Accept(TokenKind kind, string value)
    {
        if (!Peek().Is(kind, value)) return false;
        _i++;
        return true;
    }

    private static readonly HashSet<string> EndWords =
        ["endif", "elif", "else", "endfor", "endmacro", "endset", "endgeneration", "endfilter", "endcall"];

    /// <summary>Parses statements until an end word (returned in <paramref name="end"/>, its tag still open) or the end of the template.</summary>
    private List<Node> ParseBody(out string? end)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var t = Peek();
            switch (t.Kind)
            {
                case TokenKind.Eof:
                    end = null;
                    return nodes;
                case TokenKind.Data:
                    Next();
                    nodes.Add(new TextNode(t.Value, t.Line));
                    break;
                case TokenKind.VarBegin:
                    Next();
                    var e = ParseTuple();
                    Expect(TokenKind.VarEnd);
                    nodes.Add(new OutputNode(e, t.Line));
                    break;
                case TokenKind.BlockBegin:
                    var word = Peek(1);
                    if (word.Kind != TokenKind.Name) throw Error($"expected a statement name after '{{%', got {word}", word);
                    if (EndWords.Contains(word.Value))
                    {
                        end = word.Value;
                        return nodes;
                    }
                    Next(); Next();
                    nodes.Add(ParseStatement(word));
                    break;
                default:
                    throw Error($"unexpected {t}", t);
            }
        }
    }

    /// <summary>Consumes "{% word %}" where word must be one of <paramref name="allowed"/>; returns the word.</summary>
    private string EndTag(string? found, Token opener, params string[] allowed)
    {
        if (found is null)
            throw Error($"'{{% {opener.Value} %}}' is never closed (expected {string.Join(" or ", allowed.Select(a => $"'{{% {a} %}}'"))})", opener);
        if (!allowed.Contains(found))
            throw Error($"'{{% {found} %}}' does not close '{{% {opener.Value} %}}' (expected {string.Join(" or ", allowed.Select(a => $"'{a}'"))})", Peek(1));
        Next(); Next();
        return found;
    }

    private Node ParseStatement(Token word)
    {
        switch (word.Value)
        {
            case "if":
            {
                var branches = new List<(Expr, IReadOnlyList<Node>)>();
                var test = ParseExpression();
                Expect(TokenKind.BlockEnd);
                while (true)
                {
                    var body = ParseBody(out var end);
                    branches.Add((test, body));
                    string e = EndTag(end, word, "elif", "else", "endif");
                    if (e == "elif") { test = ParseExpression(); Expect(TokenKind.BlockEnd); continue; }
                    if (e == "else")
                    {
                        Expect(TokenKind.BlockEnd);
                        var elseBody = ParseBody(out var end2);
                        EndTag(end2, word, "endif");
                        Expect(TokenKind.BlockEnd);
                        return new IfNode(branches, elseBody, word.Line);
                    }
                    Expect(TokenKind.BlockEnd);
                    return new IfNode(branches, null, word.Line);
                }
            }
            case "for":
            {
                var targets = new List<string> { Expect(TokenKind.Name).Value };
                while (Accept(TokenKind.Operator, ",")) targets.Add(Expect(TokenKind.Name).Value);
                Expect(TokenKind.Name, "in");
                var iter = ParseTuple(allowConditional: false);
                Expr? filter = Accept(TokenKind.Name, "if") ? ParseExpression() : null;
                if (IsName("recursive")) throw Error("recursive loops are not supported", Peek());
                Expect(TokenKind.BlockEnd);
                var body = ParseBody(out var end);
                string e = EndTag(end, word, "else", "endfor");
                Expect(TokenKind.BlockEnd);
                List<Node>? elseBody = null;
                if (e == "else")
                {
                    elseBody = ParseBody(out var end2);
                    EndTag(end2, word, "endfor");
                    Expect(TokenKind.BlockEnd);
                }
                return new ForNode(targets, iter, filter, body, elseBody, word.Line);
            }
            case "set":
            {
                var first = Expect(TokenKind.Name).Value;
                if (Accept(TokenKind.Operator, "."))
                {
                    string attr = Expect(TokenKind.Name).Value;
                    Expect(TokenKind.Operator, "=");
                    var v = ParseTuple();
                    Expect(TokenKind.BlockEnd);
                    return new SetNode([first], attr, v, word.Line);
                }
                var targets = new List<string> { first };
                while (Accept(TokenKind.Operator, ",")) targets.Add(Expect(TokenKind.Name).Value);
                if (targets.Count == 1 && Peek().Kind == TokenKind.BlockEnd)
                {
                    Next();
                    var body = ParseBody(out var end);
                    EndTag(end, word, "endset");
                    Expect(TokenKind.BlockEnd);
                    return new SetBlockNode(first, body, word.Line);
                }
                Expect(TokenKind.Operator, "=");
                var value = ParseTuple();
                Expect(TokenKind.BlockEnd);
                return new SetNode(targets, null, value, word.Line);
            }
            case "macro":
            {
                string name = Expect(TokenKind.Name).Value;
                Expect(TokenKind.Operator, "(");
                var ps = new List<(string, Expr?)>();
                while (!IsOp(")"))
                {
                    string pn = Expect(TokenKind.Name).Value;
                    Expr? def = Accept(TokenKind.Operator, "=") ? ParseExpression() : null;
                    ps.Add((pn, def));
                    if (!Accept(TokenKind.Operator, ",")) break;
                }
                Expect(TokenKind.Operator, ")");
                Expect(TokenKind.BlockEnd);
                var body = ParseBody(out var end);
                EndTag(end, word, "endmacro");
                if (Peek().Kind == TokenKind.Name) Next();   // {% endmacro name %}
                Expect(TokenKind.BlockEnd);
                return new MacroNode(name, ps, body, word.Line);
            }
            case "generation":
            {
                Expect(TokenKind.BlockEnd);
                var body = ParseBody(out var end);
                EndTag(end, word, "endgeneration");
                Expect(TokenKind.BlockEnd);
                return new GenerationNode(body, word.Line);
            }
            case "break":
                Expect(TokenKind.BlockEnd);
                return new BreakNode(word.Line);
            case "continue":
                Expect(TokenKind.BlockEnd);
                return new ContinueNode(word.Line);
            default:
                throw Error($"unknown statement '{word.Value}'", word);
        }
    }

    // ---- expressions ----

    /// <summary>An expression, or a tuple of them separated by commas (as after <c>for x in</c> or in <c>{{ }}</c>).</summary>
    private Expr ParseTuple(bool allowConditional = true)
    {
        int line = Peek().Line;
        var first = allowConditional ? ParseExpression() : ParseOr();
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (Accept(TokenKind.Operator, ","))
        {
            if (Peek().Kind is TokenKind.BlockEnd or TokenKind.VarEnd || IsOp(")")) break;
            items.Add(allowConditional ? ParseExpression() : ParseOr());
        }
        return new TupleExpr(items, line);
    }

    private Expr ParseExpression()
    {
        var e = ParseOr();
        while (IsName("if"))
        {
            int line = Next().Line;
            var test = ParseOr();
            Expr? otherwise = Accept(TokenKind.Name, "else") ? ParseExpression() : null;
            e = new ConditionalExpr(test, e, otherwise, line);
        }
        return e;
    }

    private Expr ParseOr()
    {
        var e = ParseAnd();
        while (IsName("or")) { int l = Next().Line; e = new BinaryExpr("or", e, ParseAnd(), l); }
        return e;
    }

    private Expr ParseAnd()
    {
        var e = ParseNot();
        while (IsName("and")) { int l = Next().Line; e = new BinaryExpr("and", e, ParseNot(), l); }
        return e;
    }

    private Expr ParseNot()
    {
        if (IsName("not")) { int l = Next().Line; return new UnaryExpr("not", ParseNot(), l); }
        return ParseCompare();
    }

    private static readonly HashSet<string> CompareOps = ["==", "!=", "<", "<=", ">", ">="];

    private Expr ParseCompare()
    {
        int line = Peek().Line;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            var t = Peek();
            if (t.Kind == TokenKind.Operator && CompareOps.Contains(t.Value)) { Next(); rest.Add((t.Value, ParseMath1())); }
            else if (t.Is(TokenKind.Name, "in")) { Next(); rest.Add(("in", ParseMath1())); }
            else if (t.Is(TokenKind.Name, "not") && Peek(1).Is(TokenKind.Name, "in")) { Next(); Next(); rest.Add(("not in", ParseMath1())); }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, line);
    }

    private Expr ParseMath1()
    {
        var e = ParseConcat();
        while (IsOp("+") || IsOp("-")) { var t = Next(); e = new BinaryExpr(t.Value, e, ParseConcat(), t.Line); }
        return e;
    }

    private Expr ParseConcat()
    {
        var e = ParseMath2();
        while (IsOp("~")) { var t = Next(); e = new BinaryExpr("~", e, ParseMath2(), t.Line); }
        return e;
    }

    private Expr ParseMath2()
    {
        var e = ParsePow();
        while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { var t = Next(); e = new BinaryExpr(t.Value, e, ParsePow(), t.Line); }
        return e;
    }

    private Expr ParsePow()
    {
        var e = ParseUnary(withFilter: true);
        while (IsOp("**")) { var t = Next(); e = new BinaryExpr("**", e, ParseUnary(withFilter: true), t.Line); }
        return e;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr e;
        if (IsOp("-") || IsOp("+"))
        {
            var t = Next();
            e = new UnaryExpr(t.Value, ParseUnary(withFilter: false), t.Line);
        }
        else e = ParsePrimary();
        e = ParsePostfix(e);
        return withFilter ? ParseFilterAndTest(e) : e;
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Literal(true, t.Line),
                    "false" or "False" => new Literal(false, t.Line),
                    "none" or "None" => new Literal(null, t.Line),
                    _ => new NameExpr(t.Value, t.Line),
                };
            case TokenKind.String:
            {
                string s = t.Value;
                while (Peek().Kind == TokenKind.String) s += Next().Value;   // adjacent literals concatenate
                return new Literal(s, t.Line);
            }
            case TokenKind.Integer:
                return new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Float:
                return new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Operator when t.Value == "(":
            {
                if (Accept(TokenKind.Operator, ")")) return new TupleExpr([], t.Line);
                var e = ParseExpression();
                if (IsOp(","))
                {
                    var items = new List<Expr> { e };
                    while (Accept(TokenKind.Operator, ","))
                    {
                        if (IsOp(")")) break;
                        items.Add(ParseExpression());
                    }
                    e = new TupleExpr(items, t.Line);
                }
                Expect(TokenKind.Operator, ")");
                return e;
            }
            case TokenKind.Operator when t.Value == "[":
            {
                var items = new List<Expr>();
                while (!IsOp("]"))
                {
                    items.Add(ParseExpression());
                    if (!Accept(TokenKind.Operator, ",")) break;
                }
                Expect(TokenKind.Operator, "]");
                return new ListExpr(items, t.Line);
            }
            case TokenKind.Operator when t.Value == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    var k = ParseExpression();
                    Expect(TokenKind.Operator, ":");
                    items.Add((k, ParseExpression()));
                    if (!Accept(TokenKind.Operator, ",")) break;
                }
                Expect(TokenKind.Operator, "}");
                return new DictExpr(items, t.Line);
            }
            default:
                throw Error($"unexpected {t} in an expression", t);
        }
    }

    private Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            var t = Peek();
            if (t.Is(TokenKind.Operator, "."))
            {
                Next();
                var n = Next();
                if (n.Kind == TokenKind.Name) e = new AttributeExpr(e, n.Value, t.Line);
                else if (n.Kind == TokenKind.Integer) e = new ItemExpr(e, new Literal(long.Parse(n.Value, CultureInfo.InvariantCulture), n.Line), t.Line);
                else throw Error($"expected an attribute name after '.', got {n}", n);
            }
            else if (t.Is(TokenKind.Operator, "["))
            {
                Next();
                Expr? start = null, stop = null, step = null;
                bool slice = false;
                if (!IsOp(":")) start = ParseExpression();
                if (Accept(TokenKind.Operator, ":"))
                {
                    slice = true;
                    if (!IsOp("]") && !IsOp(":")) stop = ParseExpression();
                    if (Accept(TokenKind.Operator, ":") && !IsOp("]")) step = ParseExpression();
                }
                Expect(TokenKind.Operator, "]");
                e = slice ? new SliceExpr(e, start, stop, step, t.Line) : new ItemExpr(e, start!, t.Line);
            }
            else if (t.Is(TokenKind.Operator, "("))
            {
                Next();
                var (args, kwargs) = ParseArgs();
                e = new CallExpr(e, args, kwargs, t.Line);
            }
            else return e;
        }
    }

    /// <summary>Call arguments after '(' up to and including ')'.</summary>
    private (List<Expr>, List<(string, Expr)>) ParseArgs()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!IsOp(")"))
        {
            if (Peek().Kind == TokenKind.Name && Peek(1).Is(TokenKind.Operator, "="))
            {
                string n = Next().Value; Next();
                kwargs.Add((n, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error("a positional argument follows a keyword argument", Peek());
                args.Add(ParseExpression());
            }
            if (!Accept(TokenKind.Operator, ",")) break;
        }
        Expect(TokenKind.Operator, ")");
        return (args, kwargs);
    }

    private Expr ParseFilterAndTest(Expr e)
    {
        while (true)
        {
            if (IsOp("|"))
            {
                var t = Next();
                string name = Expect(TokenKind.Name).Value;
                while (Accept(TokenKind.Operator, ".")) name += "." + Expect(TokenKind.Name).Value;
                List<Expr> args = []; List<(string, Expr)> kwargs = [];
                if (Accept(TokenKind.Operator, "(")) (args, kwargs) = ParseArgs();
                e = new FilterExpr(e, name, args, kwargs, t.Line);
            }
            else if (IsName("is"))
            {
                var t = Next();
                bool negated = Accept(TokenKind.Name, "not");
                string name = Expect(TokenKind.Name).Value;
                var args = new List<Expr>();
                if (Accept(TokenKind.Operator, "("))
                {
                    var (a, kw) = ParseArgs();
                    if (kw.Count > 0) throw Error($"test '{name}' takes no keyword arguments", t);
                    args = a;
                }
                else if (StartsTestArgument(Peek()))
                    args.Add(ParsePostfix(ParsePrimary()));   // "is equalto 'user'", "is sameas false"
                e = new TestExpr(e, name, args, negated, t.Line);
            }
            else return e;
        }
    }

    private static bool StartsTestArgument(Token t) => t.Kind switch
    {
        TokenKind.String or TokenKind.Integer or TokenKind.Float => true,
        TokenKind.Name => t.Value is not ("if" or "in" or "is" or "not" or "and" or "or" or "else"),
        TokenKind.Operator => t.Value is "[" or "{",
        _ => false,
    };
}
