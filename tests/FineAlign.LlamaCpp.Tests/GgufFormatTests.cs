using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Models.Gguf;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>The file itself, read back with an independent reader (no llama.cpp): header, metadata types, names, offsets.</summary>
[Collection("gguf")]
public class GgufFormatTests
{
    [Fact]
    public void Header_metadata_types_and_aligned_offsets()
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create("llama", heads: 4, kvHeads: 2, tied: false,
            extra: new JsonObject { ["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = 2.0 } });
        string dir = TinyModels.Save(model, tmp.Path, "m");
        var result = GgufExporter.Export(model, dir, tmp.File("m.gguf"), GgmlType.F16);
        var f = GgufFile.Read(result.Path);

        Assert.Equal(3u, f.Version);
        Assert.Equal((4u, (object)32u), f.Metadata["general.alignment"]);                       // uint32
        Assert.Equal((8u, (object)"llama"), f.Metadata["general.architecture"]);                 // string
        Assert.Equal(1u, f.Get<uint>("general.file_type"));                                       // MOSTLY_F16
        Assert.Equal(2u, f.Get<uint>("llama.block_count"));
        Assert.Equal(64u, f.Get<uint>("llama.embedding_length"));
        Assert.Equal(128u, f.Get<uint>("llama.feed_forward_length"));
        Assert.Equal(128u, f.Get<uint>("llama.context_length"));
        Assert.Equal(4u, f.Get<uint>("llama.attention.head_count"));
        Assert.Equal(2u, f.Get<uint>("llama.attention.head_count_kv"));
        Assert.Equal(16u, f.Get<uint>("llama.rope.dimension_count"));
        Assert.Equal(6u, f.Metadata["llama.attention.layer_norm_rms_epsilon"].Type);             // float32
        Assert.Equal(1e-5f, f.Get<float>("llama.attention.layer_norm_rms_epsilon"));
        Assert.Equal(10000f, f.Get<float>("llama.rope.freq_base"));
        Assert.Equal("linear", f.Get<string>("llama.rope.scaling.type"));
        Assert.Equal(2f, f.Get<float>("llama.rope.scaling.factor"));

        // Vocabulary: the byte tokenizer as GPT-2-style BPE with no merges; specials are control tokens.
        Assert.Equal("gpt2", f.Get<string>("tokenizer.ggml.model"));
        Assert.Equal("gpt-2", f.Get<string>("tokenizer.ggml.pre"));
        var tokens = f.Array("tokenizer.ggml.tokens");
        Assert.Equal(8u, tokens.Elem);
        Assert.Equal(261, tokens.Items.Count);
        Assert.Equal("Ġ", tokens.Items[32]);                                                    // byte 0x20 in GPT-2's byte alphabet
        Assert.Equal("<|im_end|>", tokens.Items[260]);
        var types = f.Array("tokenizer.ggml.token_type");
        Assert.Equal(5u, types.Elem);                                                           // int32
        Assert.Equal(1, types.Items[65]);
        Assert.Equal(3, types.Items[257]);
        Assert.Empty(f.Array("tokenizer.ggml.merges").Items);
        Assert.Equal(256u, f.Get<uint>("tokenizer.ggml.bos_token_id"));
        Assert.Equal(257u, f.Get<uint>("tokenizer.ggml.eos_token_id"));
        Assert.Equal(258u, f.Get<uint>("tokenizer.ggml.padding_token_id"));
        Assert.True(f.Get<bool>("tokenizer.ggml.add_bos_token"));
        Assert.Contains("<|im_start|>", f.Get<string>("tokenizer.chat_template"));

        // Tensors: llama.cpp names, ggml dims (innermost first), f16 matrices, f32 norms, aligned data.
        Assert.Equal(3 + 2 * 9, f.Tensors.Count);
        Assert.Equal(new ulong[] { 64, 261 }, f.Tensor("token_embd.weight").Dims);
        Assert.Equal(new ulong[] { 64, 261 }, f.Tensor("output.weight").Dims);
        Assert.Equal(new ulong[] { 64, 32 }, f.Tensor("blk.1.attn_k.weight").Dims);            // 2 kv heads × 16
        Assert.Equal(new ulong[] { 128, 64 }, f.Tensor("blk.0.ffn_down.weight").Dims);
        Assert.Equal(1u, f.Tensor("blk.0.attn_q.weight").Type);
        Assert.Equal(0u, f.Tensor("blk.0.attn_norm.weight").Type);
        Assert.Equal(0u, f.Tensor("output_norm.weight").Type);
        Assert.Equal(0, f.DataStart % 32);
        ulong end = 0;
        foreach (var t in f.Tensors.OrderBy(t => t.Offset))
        {
            Assert.Equal(0ul, t.Offset % 32);
            Assert.True(t.Offset >= end, $"{t.Name} overlaps the previous tensor");
            end = t.Offset + t.Dims.Aggregate(1ul, (a, b) => a * b) * (t.Type == 0 ? 4ul : 2ul);
        }
        Assert.True(f.DataStart + (long)end <= f.Length);
        Assert.Equal(f.Length, result.Bytes);
    }

    [Fact]
    public void Llama_q_and_k_rows_are_permuted_v_and_qwen2_are_not()
    {
        using var tmp = new TempDir();
        using var llama = TinyModels.Create("llama", heads: 4, kvHeads: 2, tied: true);
        var lf = GgufFile.Read(GgufExporter.Export(llama, TinyModels.Save(llama, tmp.Path, "l"), tmp.File("l.gguf")).Path);
        var sd = llama.state_dict();
        Assert.DoesNotContain(lf.Tensors, t => t.Name == "output.weight");                   // tied: llama.cpp reuses token_embd
        var q = sd["model.layers.0.self_attn.q_proj.weight"];
        var fileQ = ReadF32(tmp.File("l.gguf"), lf, "blk.0.attn_q.weight", q.shape);
        // Head h, row 2i of the file = HF row i, row 2i+1 = HF row i + D/2 (D = 16).
        for (int h = 0; h < 4; h++)
            for (int i = 0; i < 8; i++)
            {
                Assert.True(fileQ[h * 16 + 2 * i].equal(q[h * 16 + i]).all().item<bool>());
                Assert.True(fileQ[h * 16 + 2 * i + 1].equal(q[h * 16 + i + 8]).all().item<bool>());
            }
        Assert.False(fileQ.equal(q).all().item<bool>());
        var k = sd["model.layers.1.self_attn.k_proj.weight"];
        Assert.True(ReadF32(tmp.File("l.gguf"), lf, "blk.1.attn_k.weight", k.shape).equal(GgufExporter.Permute(k, 2)).all().item<bool>());
        var v = sd["model.layers.1.self_attn.v_proj.weight"];
        Assert.True(ReadF32(tmp.File("l.gguf"), lf, "blk.1.attn_v.weight", v.shape).equal(v).all().item<bool>());

        using var qwen = TinyModels.Create("qwen2", heads: 4, kvHeads: 2, tied: true);
        var qf = GgufFile.Read(GgufExporter.Export(qwen, TinyModels.Save(qwen, tmp.Path, "q"), tmp.File("q.gguf")).Path);
        Assert.Equal("qwen2", qf.Get<string>("general.architecture"));
        var qsd = qwen.state_dict();
        var qq = qsd["model.layers.0.self_attn.q_proj.weight"];
        Assert.True(ReadF32(tmp.File("q.gguf"), qf, "blk.0.attn_q.weight", qq.shape).equal(qq).all().item<bool>());
        var qb = qsd["model.layers.0.self_attn.k_proj.bias"];
        Assert.True(ReadF32(tmp.File("q.gguf"), qf, "blk.0.attn_k.bias", qb.shape).equal(qb).all().item<bool>());
        Assert.Equal(0u, qf.Tensor("blk.0.attn_k.bias").Type);
    }

    [Fact]
    public void Gpt2_and_unknown_pre_tokenisers_are_refused_by_name()
    {
        using var tmp = new TempDir();
        var gpt2Config = ModelConfig.FromJson(new JsonObject
        {
            ["model_type"] = "gpt2", ["vocab_size"] = 261, ["n_embd"] = 32, ["n_layer"] = 1, ["n_head"] = 2, ["n_positions"] = 32,
        });
        using var gpt2 = ModelFactory.Create(gpt2Config, 0);
        string gdir = TinyModels.Save(gpt2, tmp.Path, "g");
        var e = Assert.Throws<FineAlignException>(() => GgufExporter.Export(gpt2, gdir, tmp.File("g.gguf")));
        Assert.Contains("model_type 'gpt2'", e.Message);
        Assert.False(File.Exists(tmp.File("g.gguf")));

        using var llama = TinyModels.Create("llama", heads: 4, kvHeads: 4, tied: true);
        string dir = TinyModels.Save(llama, tmp.Path, "l");
        string path = Path.Combine(dir, "tokenizer.json");
        var tj = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        tj["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = "\\p{L}+|\\s+" }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        };
        File.WriteAllText(path, tj.ToJsonString());
        e = Assert.Throws<FineAlignException>(() => GgufExporter.Export(llama, dir, tmp.File("l.gguf")));
        Assert.Contains("Split regex \"\\p{L}+|\\s+\"", e.Message);
        Assert.Contains("llama.cpp", e.Message);
        Assert.False(File.Exists(tmp.File("l.gguf")));
        Assert.Empty(Directory.GetFiles(tmp.Path, "*.tmp-*"));
    }

    internal static Tensor ReadF32(string path, GgufFile f, string name, long[] shape)
    {
        var t = f.Tensor(name);
        Assert.Equal(0u, t.Type);
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var bytes = new byte[n * 4];
        using (var s = File.OpenRead(path)) { s.Position = f.DataStart + (long)t.Offset; s.ReadExactly(bytes); }
        return tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray()).reshape(shape);
    }
}
