using System.Globalization;
using FineAlign.Models;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Cli.Commands;

/// <summary>
/// What the model-reading commands share: finding the Hugging Face folder (<see cref="ModelLocator"/> in the
/// library: a folder, a FineAlign training checkpoint, or org/name from the hub cache), loading model and
/// tokenizer, and parsing --dtype / --max-shard-size values.
/// </summary>
public static class ModelFolder
{
    /// <summary>Names accepted by --dtype.</summary>
    public const string DTypeNames = "float32, float16, bfloat16";

    /// <summary>
    /// The model folder a --model value names (see <see cref="ModelLocator.Resolve"/>: folder, checkpoint, or org/name
    /// from the hub cache); a missing folder is named by the flag that gave it (<paramref name="option"/>).
    /// </summary>
    public static string Resolve(string folder, string option = "--model")
    {
        try { return ModelLocator.Resolve(folder); }
        catch (FineAlignException e) when (e.Message == $"{folder}: model folder not found.")
        {
            throw new FineAlignException($"{option} {folder}: model folder not found.", e);
        }
    }

    /// <summary>Loads the model of <paramref name="folder"/> (see <see cref="Resolve"/>) in <paramref name="dtype"/>, in eval mode.</summary>
    public static CausalLM LoadModel(string folder, ScalarType dtype, out string resolved)
    {
        resolved = Resolve(folder);
        var model = ModelIO.Load(resolved, dtype);
        model.eval();
        return model;
    }

    /// <summary>The folder's tokenizer, or null when it has no tokenizer files at all (a bad tokenizer file is an error).</summary>
    public static TextTokenizer? TryLoadTokenizer(string folder)
    {
        bool any = ModelIO.TokenizerFiles.Any(f => f is not ("chat_template.jinja" or "chat_template.json" or "special_tokens_map.json")
                                                   && File.Exists(Path.Combine(folder, f)));
        return any ? TokenizerLoader.Load(folder) : null;
    }

    /// <summary>"float32"/"fp32", "float16"/"fp16"/"half", "bfloat16"/"bf16" → the torch dtype; null for anything else.</summary>
    public static ScalarType? ParseDType(string? name) => name?.Trim().ToLowerInvariant() switch
    {
        "float32" or "fp32" or "float" => ScalarType.Float32,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => null,
    };

    /// <summary>Check for a --dtype option value.</summary>
    public static string? CheckDType(string? name) => ParseDType(name) is null ? $"must be one of {DTypeNames}" : null;

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => "float32",
    };

    /// <summary>
    /// A size as transformers' max_shard_size writes it: "5GB" = 5·10⁹ bytes, "500MB", "2GiB" = 2·2³⁰, "100KB",
    /// or a plain byte count. Null when the text is not such a size or not positive.
    /// </summary>
    public static long? ParseSize(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        string s = text.Trim().ToUpperInvariant();
        (string unit, double factor)[] units =
        [
            ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1),
        ];
        double mult = 1;
        foreach (var (unit, factor) in units)
            if (s.EndsWith(unit, StringComparison.Ordinal)) { s = s[..^unit.Length].Trim(); mult = factor; break; }
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || !(n > 0) || double.IsInfinity(n)) return null;
        double bytes = Math.Floor(n * mult);
        return bytes is >= 1 and <= long.MaxValue ? (long)bytes : null;
    }
}
