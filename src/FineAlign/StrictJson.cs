using System.Text.Json;

namespace FineAlign;

/// <summary>JSON parsing options every reader shares: a duplicated key is an error, not "last one wins".</summary>
internal static class StrictJson
{
    public static readonly JsonDocumentOptions Options = new() { AllowDuplicateProperties = false };

    /// <summary>
    /// A JsonException's message in the user's terms: System.Text.Json's own position suffix ("LineNumber: 0 |
    /// BytePositionInLine: 12.", 0-based) is replaced by a 1-based "line L, byte B".
    /// </summary>
    public static string Describe(JsonException e)
    {
        string m = e.Message.ReplaceLineEndings(" ");
        int i = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (i < 0) i = m.IndexOf(" Path:", StringComparison.Ordinal);
        string head = (i >= 0 ? m[..i] : m).TrimEnd(' ', '|', '.');
        return e.LineNumber is long l ? $"{head} (line {l + 1}, byte {(e.BytePositionInLine ?? 0) + 1})" : head;
    }
}
