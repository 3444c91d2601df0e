using System.Text.Json;

namespace FineAlign.Text.Pipeline;

/// <summary>
/// Typed access to the fields of one tokenizer.json object, with one-line errors that name the file, the
/// component's path (e.g. <c>pre_tokenizer.pretokenizers[0]</c>) and the field. A field of the wrong type is
/// an error, never silently ignored; a missing optional field takes Rust <c>tokenizers</c>' serde default.
/// </summary>
internal readonly struct JsonFields
{
    public JsonFields(string file, string where, JsonElement obj)
    {
        File = file; Where = where; Obj = obj;
        if (obj.ValueKind != JsonValueKind.Object) throw Fail(where, $"expected an object, got {Kind(obj)}");
    }

    public string File { get; }
    public string Where { get; }
    public JsonElement Obj { get; }

    public FineAlignException Fail(string field, string what) => new($"{File}: {Path(field)}: {what}");
    public FineAlignException Fail(string what) => new($"{File}: {Where}: {what}");
    public string Path(string field) => field.Length == 0 ? Where : field.StartsWith('[') || Where.Length == 0 ? Where + field : $"{Where}.{field}";

    public bool Has(string field) => Obj.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement? Get(string field) =>
        Obj.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public string Type => Get("type") is { } t
        ? (t.ValueKind == JsonValueKind.String ? t.GetString()! : throw Fail("type", $"expected a string, got {Kind(t)}"))
        : throw Fail("has no 'type' field");

    public string? OptString(string field) => Get(field) switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } v => v.GetString(),
        var v => throw Fail(field, $"expected a string, got {Kind(v.Value)}"),
    };

    public string String(string field) => OptString(field) ?? throw Fail(field, "missing (expected a string)");

    public bool Bool(string field, bool fallback) => Get(field) switch
    {
        null => fallback,
        { ValueKind: JsonValueKind.True } => true,
        { ValueKind: JsonValueKind.False } => false,
        var v => throw Fail(field, $"expected true or false, got {Kind(v.Value)}"),
    };

    public int Int(string field, int? fallback = null) => Get(field) switch
    {
        null => fallback ?? throw Fail(field, "missing (expected an integer)"),
        { ValueKind: JsonValueKind.Number } v when v.TryGetInt32(out int i) => i,
        var v => throw Fail(field, $"expected an integer, got {Kind(v.Value)} {v.Value.GetRawText()}"),
    };

    public double? OptDouble(string field) => Get(field) switch
    {
        null => null,
        { ValueKind: JsonValueKind.Number } v => v.GetDouble(),
        var v => throw Fail(field, $"expected a number, got {Kind(v.Value)}"),
    };

    public JsonElement Array(string field)
    {
        var v = Get(field) ?? throw Fail(field, "missing (expected a list)");
        return v.ValueKind == JsonValueKind.Array ? v : throw Fail(field, $"expected a list, got {Kind(v)}");
    }

    public JsonFields Child(string field) =>
        new(File, Path(field), Get(field) ?? throw Fail(field, "missing (expected an object)"));

    /// <summary>A single character field (Metaspace's replacement, Strip's content).</summary>
    public string Char(string field, string fallback)
    {
        string s = OptString(field) ?? fallback;
        return s.EnumerateRunes().Count() == 1 ? s : throw Fail(field, $"expected one character, got \"{s}\"");
    }

    public static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };
}
