using System.Text.Json;

namespace FineAlign;

/// <summary>JSON parsing options every reader shares: a duplicated key is an error, not "last one wins".</summary>
internal static class StrictJson
{
    public static readonly JsonDocumentOptions Options = new() { AllowDuplicateProperties = false };
}
