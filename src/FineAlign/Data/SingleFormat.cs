namespace FineAlign.Data;

/// <summary>
/// One format per file: the first line's format fixes it, and a later line in another format is an error
/// naming both lines (mixed layouts are almost always a concatenation mistake).
/// </summary>
internal sealed class SingleFormat<TFormat>(string path, Func<TFormat, string> describe) where TFormat : struct, Enum
{
    private TFormat? _format;
    private long _firstLine;

    public void Check(TFormat format, long line)
    {
        if (_format is null) { _format = format; _firstLine = line; }
        else if (!EqualityComparer<TFormat>.Default.Equals(format, _format.Value))
            throw new DataFormatException(path, line, null,
                $"format {describe(format)} differs from {describe(_format.Value)} of line {_firstLine}; one file must use one format");
    }
}
