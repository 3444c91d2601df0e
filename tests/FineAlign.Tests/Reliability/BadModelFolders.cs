using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Malformed model folders made from the valid llama-tiny fixture: binary safetensors damage is generated here
/// (header rewrites, truncation) rather than stored; configs come from Inputs/configs/*.json.
/// </summary>
internal static class BadModelFolders
{
    public static string Inputs => Path.Combine(AppContext.BaseDirectory, "Reliability", "Inputs");
    public static string Fixture => TestPaths.RequireShared("fixtures/llama-tiny");

    /// <summary>A copy of the fixture (config.json + model.safetensors) in <paramref name="dir"/>.</summary>
    public static string ValidCopy(string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "model.safetensors" })
            File.Copy(Path.Combine(Fixture, f), Path.Combine(dir, f));
        return dir;
    }

    /// <summary>Splits a safetensors file into its header object and data bytes.</summary>
    public static (JsonObject Header, byte[] Data) Split(byte[] file)
    {
        long n = BitConverter.ToInt64(file, 0);
        var header = JsonNode.Parse(file.AsSpan(8, (int)n))!.AsObject();
        return (header, file[(8 + (int)n)..]);
    }

    public static byte[] Join(JsonObject header, byte[] data)
    {
        byte[] h = Encoding.UTF8.GetBytes(header.ToJsonString());
        return [.. BitConverter.GetBytes((ulong)h.Length), .. h, .. data];
    }

    /// <summary>Names of the cases <see cref="Make"/> builds.</summary>
    public static readonly string[] Cases =
    [
        "st-truncated", "st-too-short", "st-huge-header-length", "st-header-past-end", "st-header-not-json",
        "st-overlapping-offsets", "st-offsets-outside-file", "st-unknown-dtype", "st-shape-vs-offsets", "st-integer-weights",
        "st-negative-dim", "st-huge-shape", "st-missing-tensor", "st-unexpected-tensor",
        "index-parent-path", "index-absolute-path", "index-missing-shard", "pickle-only",
        "cfg-absurd-sizes", "cfg-truncated", "cfg-hidden-size-string", "cfg-missing-vocab-size", "cfg-negative-vocab",
        "cfg-unknown-model-type", "cfg-unknown-torch-dtype", "cfg-shape-mismatch", "cfg-eps-overflow", "cfg-not-an-object",
    ];

    /// <summary>
    /// Builds case <paramref name="name"/> as a model folder under <paramref name="root"/>; returns the folder and the
    /// file name the error must mention plus a phrase describing the problem.
    /// </summary>
    public static (string Folder, string NamedFile, string Problem) Make(string root, string name)
    {
        string dir = ValidCopy(Path.Combine(root, name));
        string st = Path.Combine(dir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(st);
        var (header, data) = Split(bytes);
        // Two tensors of the same shape: the RMSNorm gains of layer 0 (64 floats each).
        const string a = "model.layers.0.input_layernorm.weight", b = "model.layers.0.post_attention_layernorm.weight";
        void Write(byte[] b2) => File.WriteAllBytes(st, b2);
        void Edit(Action<JsonObject> edit) { edit(header); Write(Join(header, data)); }
        long[] Offsets(string t) => header[t]!["data_offsets"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();

        switch (name)
        {
            case "st-truncated": Write(bytes[..(bytes.Length / 2)]); return (dir, "model.safetensors", "truncated");
            case "st-too-short": Write(bytes[..5]); return (dir, "model.safetensors", "too short");
            case "st-huge-header-length":
                Write([.. BitConverter.GetBytes(ulong.MaxValue - 7), .. bytes[8..]]);
                return (dir, "model.safetensors", "header length");
            case "st-header-past-end":
                Write([.. BitConverter.GetBytes((ulong)bytes.Length), .. bytes[8..]]);
                return (dir, "model.safetensors", "past the end");
            case "st-header-not-json":
            {
                var copy = (byte[])bytes.Clone();
                for (int i = 8; i < 40; i++) copy[i] = (byte)'#';
                Write(copy);
                return (dir, "model.safetensors", "not valid JSON");
            }
            case "st-overlapping-offsets":
                Edit(h => h[b]!["data_offsets"] = new JsonArray(Offsets(a).Select(x => (JsonNode)x).ToArray()));
                return (dir, "model.safetensors", "overlap");
            case "st-offsets-outside-file":
                Edit(h => h[a]!["data_offsets"] = new JsonArray(data.Length + 1024L, data.Length + 1024L + 256));
                return (dir, "model.safetensors", "outside");
            case "st-unknown-dtype": Edit(h => h[a]!["dtype"] = "F8_E4M3"); return (dir, "model.safetensors", "F8_E4M3");
            case "st-shape-vs-offsets": Edit(h => h[a]!["shape"] = new JsonArray(65)); return (dir, "model.safetensors", "needs 260 bytes");
            case "st-integer-weights": Edit(h => h[a]!["dtype"] = "I32"); return (dir, "model.safetensors", "floating point");
            case "st-negative-dim": Edit(h => h[a]!["shape"] = new JsonArray(-64)); return (dir, "model.safetensors", "non-negative");
            case "st-huge-shape": Edit(h => h[a]!["shape"] = new JsonArray(1L << 40, 1L << 40)); return (dir, "model.safetensors", "too large");
            case "st-missing-tensor": Edit(h => h.Remove(a)); return (dir, name, a);
            case "st-unexpected-tensor":
                Edit(h => h["lm_head.extra_bias"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(0), ["data_offsets"] = new JsonArray(0, 0) });
                return (dir, "model.safetensors", "unexpected tensor 'lm_head.extra_bias'");
            case "index-parent-path":
            case "index-absolute-path":
            case "index-missing-shard":
            {
                string shard = name switch
                {
                    "index-parent-path" => "../model.safetensors",
                    "index-absolute-path" => Path.GetFullPath(st),
                    _ => "model-00001-of-00002.safetensors",
                };
                // The real weights sit where an escaping path would find them: only the name check stops it.
                File.Move(st, Path.Combine(root, "model.safetensors"), overwrite: true);
                var map = new JsonObject();
                foreach (var (k, _) in header) if (k != "__metadata__") map[k] = shard;
                File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
                    new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
                return (dir, "model.safetensors.index.json", name == "index-missing-shard" ? "does not exist" : "model folder");
            }
            case "pickle-only":
                File.Delete(st);
                File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02, (byte)'c', (byte)'o', (byte)'s', 0x0a]);
                return (dir, name, "pickle");
            default:
            {
                if (!name.StartsWith("cfg-", StringComparison.Ordinal)) throw new ArgumentException(name);
                File.Copy(Path.Combine(Inputs, "configs", name[4..] + ".json"), Path.Combine(dir, "config.json"), overwrite: true);
                string problem = name switch
                {
                    "cfg-absurd-sizes" => "memory",
                    "cfg-truncated" => "not valid JSON",
                    "cfg-hidden-size-string" => "'hidden_size' must be an integer",
                    "cfg-missing-vocab-size" => "'vocab_size' is missing",
                    "cfg-negative-vocab" => "'vocab_size' = -5",
                    "cfg-unknown-model-type" => "mamba",
                    "cfg-unknown-torch-dtype" => "int4",
                    "cfg-shape-mismatch" => "config.json implies",
                    "cfg-eps-overflow" => "rms_norm_eps",
                    "cfg-not-an-object" => "JSON object",
                    _ => throw new ArgumentException(name),
                };
                return (dir, name == "cfg-shape-mismatch" ? "model.safetensors" : "config.json", problem);
            }
        }
    }
}
