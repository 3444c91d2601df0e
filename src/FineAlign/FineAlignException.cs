namespace FineAlign;

/// <summary>
/// A user-facing error: the message is one line that names what is wrong and where
/// (file, line, field, tensor). The CLI prints it without a stack trace and exits non-zero.
/// </summary>
public class FineAlignException : Exception
{
    public FineAlignException(string message) : base(message) { }
    public FineAlignException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Bad input data: names the file, the 1-based line and the field.</summary>
public sealed class DataFormatException : FineAlignException
{
    public DataFormatException(string file, long line, string? field, string problem)
        : base(field is null ? $"{file}:{line}: {problem}" : $"{file}:{line}: field '{field}': {problem}")
    {
        File = file; Line = line; Field = field;
    }

    public string File { get; }
    public long Line { get; }
    public string? Field { get; }
}
