namespace FineAlign.Text.Jinja;

// The syntax tree. Every node keeps the source line it started on, for error messages.

public abstract record Node(int Line);

// ---- statements ----
public sealed record TextNode(string Text, int Line) : Node(Line);
public sealed record OutputNode(Expr Value, int Line) : Node(Line);
public sealed record IfNode(IReadOnlyList<(Expr Test, IReadOnlyList<Node> Body)> Branches, IReadOnlyList<Node>? Else, int Line) : Node(Line);
public sealed record ForNode(IReadOnlyList<string> Targets, Expr Iterable, Expr? Filter, IReadOnlyList<Node> Body, IReadOnlyList<Node>? Else, int Line) : Node(Line);
/// <summary><c>set x = v</c>, <c>set a, b = v</c> or <c>set ns.attr = v</c> (<see cref="Attribute"/> set).</summary>
public sealed record SetNode(IReadOnlyList<string> Targets, string? Attribute, Expr Value, int Line) : Node(Line);
/// <summary><c>{% set x %}...{% endset %}</c>.</summary>
public sealed record SetBlockNode(string Target, IReadOnlyList<Node> Body, int Line) : Node(Line);
public sealed record MacroNode(string Name, IReadOnlyList<(string Name, Expr? Default)> Parameters, IReadOnlyList<Node> Body, int Line) : Node(Line);
/// <summary><c>{% generation %}</c>: the output inside is what the model generates (transformers' assistant mask).</summary>
public sealed record GenerationNode(IReadOnlyList<Node> Body, int Line) : Node(Line);
public sealed record BreakNode(int Line) : Node(Line);
public sealed record ContinueNode(int Line) : Node(Line);

// ---- expressions ----
public abstract record Expr(int Line) : Node(Line);
public sealed record Literal(object? Value, int Line) : Expr(Line);
public sealed record NameExpr(string Name, int Line) : Expr(Line);
public sealed record ListExpr(IReadOnlyList<Expr> Items, int Line) : Expr(Line);
public sealed record TupleExpr(IReadOnlyList<Expr> Items, int Line) : Expr(Line);
public sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);
public sealed record AttributeExpr(Expr Target, string Name, int Line) : Expr(Line);
public sealed record ItemExpr(Expr Target, Expr Index, int Line) : Expr(Line);
public sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
public sealed record CallExpr(Expr Function, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
public sealed record FilterExpr(Expr Value, string Name, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs, int Line) : Expr(Line);
public sealed record TestExpr(Expr Value, string Name, IReadOnlyList<Expr> Args, bool Negated, int Line) : Expr(Line);
public sealed record UnaryExpr(string Op, Expr Operand, int Line) : Expr(Line);
public sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
/// <summary>Chained comparison <c>a &lt; b &lt;= c</c> as in Python.</summary>
public sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Operand)> Rest, int Line) : Expr(Line);
public sealed record ConditionalExpr(Expr Test, Expr Then, Expr? Else, int Line) : Expr(Line);
