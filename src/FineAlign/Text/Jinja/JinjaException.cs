namespace FineAlign.Text.Jinja;

/// <summary>
/// A template that cannot be parsed or rendered. <see cref="Line"/>/<see cref="Column"/> are 1-based
/// positions in the template source (0 when unknown). The message is one line.
/// </summary>
public class JinjaException : FineAlignException
{
    public JinjaException(string problem, int line, int column = 0)
        : base(line > 0 ? (column > 0 ? $"line {line}, column {column}: {problem}" : $"line {line}: {problem}") : problem)
    {
        Problem = problem; Line = line; Column = column;
    }

    /// <summary>The message without its position.</summary>
    public string Problem { get; }
    public int Line { get; }
    public int Column { get; }
}

/// <summary>The template called <c>raise_exception(message)</c>: it refuses its input (e.g. roles that do not alternate).</summary>
public sealed class JinjaRaisedException(string message, int line) : JinjaException(message, line)
{
    /// <summary>The template's own message.</summary>
    public string TemplateMessage { get; } = message;
}
