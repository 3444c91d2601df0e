using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FineAlign.Cli.Commands;

/// <summary>
/// Where a command writes JSON lines: standard output, or a file written atomically — lines go to a hidden
/// temporary sibling, which replaces the target only on <see cref="Commit"/>; disposing without commit deletes
/// it, so an error never leaves a half-written output file (nor destroys an older one).
/// </summary>
public sealed class JsonlOutput : IDisposable
{
    private static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly TextWriter _writer;
    private readonly string? _target;
    private readonly string? _temp;
    private bool _done;

    private JsonlOutput(TextWriter writer, string? target, string? temp)
    {
        _writer = writer;
        _target = target;
        _temp = temp;
    }

    /// <summary>Lines go to <paramref name="stdout"/> (not owned).</summary>
    public static JsonlOutput ToConsole(TextWriter stdout) => new(stdout, null, null);

    public static JsonlOutput ToFile(string path)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new FineAlignException($"output '{path}' is a folder, expected a file path");
        string dir = Path.GetDirectoryName(full) ?? throw new FineAlignException($"output '{path}' has no parent folder");
        if (File.Exists(dir)) throw new FineAlignException($"cannot write '{path}': '{dir}' is a file");
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid().ToString("N")[..12]}");
        var writer = new StreamWriter(temp, false, new UTF8Encoding(false)) { NewLine = "\n" };
        return new JsonlOutput(writer, full, temp);
    }

    public bool IsFile => _target is not null;

    /// <summary>Count of lines written.</summary>
    public long Count { get; private set; }

    public void Write(JsonObject line)
    {
        _writer.WriteLine(line.ToJsonString(Compact));
        Count++;
    }

    /// <summary>Finishes the output: flushes, and for a file moves the temporary into place.</summary>
    public void Commit()
    {
        _writer.Flush();
        if (_target is null) { _done = true; return; }
        _writer.Dispose();
        File.Move(_temp!, _target, overwrite: true);
        _done = true;
    }

    public void Dispose()
    {
        if (_target is null) return;
        _writer.Dispose();
        if (!_done && File.Exists(_temp)) File.Delete(_temp!);
    }
}
