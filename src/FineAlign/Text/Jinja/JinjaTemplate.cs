namespace FineAlign.Text.Jinja;

/// <summary>
/// A parsed Jinja template, rendered with the environment transformers' <c>apply_chat_template</c> uses
/// (trim_blocks, lstrip_blocks, loop controls, <c>{% generation %}</c>, raise_exception, strftime_now, its tojson).
/// Parse once, render many times; rendering is thread-safe.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly IReadOnlyList<Node> _program;

    private JinjaTemplate(string source, IReadOnlyList<Node> program)
    {
        Source = source;
        _program = program;
        HasGenerationBlocks = ContainsGeneration(program);
    }

    public string Source { get; }

    /// <summary>Whether the template marks assistant output with <c>{% generation %}</c>.</summary>
    public bool HasGenerationBlocks { get; }

    /// <summary>Parses <paramref name="source"/>; a syntax error is a <see cref="JinjaException"/> with line and column.</summary>
    public static JinjaTemplate Parse(string source) => new(source, JinjaParser.Parse(source));

    /// <summary>Renders with <paramref name="variables"/> (values as <see cref="JinjaValues"/> describes; see <see cref="JinjaValues.FromJson"/>).</summary>
    public RenderResult Render(IReadOnlyDictionary<string, object?> variables, JinjaBuiltins? builtins = null)
        => new JinjaRenderer(builtins ?? DefaultBuiltins).Render(_program, variables);

    private static readonly JinjaBuiltins DefaultBuiltins = new();

    private static bool ContainsGeneration(IEnumerable<Node> nodes) => nodes.Any(n => n switch
    {
        GenerationNode => true,
        IfNode i => i.Branches.Any(b => ContainsGeneration(b.Body)) || (i.Else is not null && ContainsGeneration(i.Else)),
        ForNode f => ContainsGeneration(f.Body) || (f.Else is not null && ContainsGeneration(f.Else)),
        MacroNode m => ContainsGeneration(m.Body),
        SetBlockNode s => ContainsGeneration(s.Body),
        _ => false,
    });
}
