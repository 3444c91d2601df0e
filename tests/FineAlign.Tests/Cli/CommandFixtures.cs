using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Text;
using static TorchSharp.torch;

namespace FineAlign.Tests.Cli;

/// <summary>Tiny models saved to folders for the model commands, and JSONL helpers.</summary>
internal static class CommandFixtures
{
    /// <summary>A random llama over the byte tokenizer's 261 ids, saved with the tokenizer files.</summary>
    public static string SaveByteModel(string dir, long seed = 11, int context = 96)
    {
        var config = new ModelConfig
        {
            ModelType = "llama", VocabSize = 261, HiddenSize = 16, IntermediateSize = 32, NumLayers = 2, NumHeads = 4,
            NumKvHeads = 2, HeadDim = 4, MaxPositionEmbeddings = context, BosTokenId = 256, EosTokenIds = [257], PadTokenId = 258,
        };
        using var model = ModelFactory.Create(config, seed);
        ModelIO.Save(model, dir, new ByteTokenizer());
        return dir;
    }

    public static void WriteLines(string path, params string[] lines) => File.WriteAllText(path, string.Join("\n", lines) + "\n");

    public static List<JsonObject> ReadJsonl(string path) => ParseJsonl(File.ReadAllText(path));

    public static List<JsonObject> ParseJsonl(string text) =>
        CliRunner.Lines(text).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    public static int[] Ints(JsonNode? node) => node!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    public static float[] Floats(JsonNode? node) => node!.AsArray().Select(x => x!.GetValue<float>()).ToArray();

    /// <summary>Logits [1, T, V] of a model folder on <paramref name="ids"/>, as a flat float array.</summary>
    public static float[] Logits(string folder, int[] ids)
    {
        using var model = ModelIO.Load(folder);
        model.eval();
        using var _ = no_grad();
        using var input = tensor(ids.Select(x => (long)x).ToArray(), [1, ids.Length]);
        using var logits = model.Forward(input);
        return logits.data<float>().ToArray();
    }
}
