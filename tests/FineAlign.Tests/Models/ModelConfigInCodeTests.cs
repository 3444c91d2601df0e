using System.Text.Json.Nodes;
using FineAlign.Models;

namespace FineAlign.Tests.Models;

public class ModelConfigInCodeTests
{
    [Fact]
    public void JsonObjectBuiltInCodeParsesLikeJsonText()
    {
        var o = new JsonObject
        {
            ["model_type"] = "llama", ["vocab_size"] = 32, ["hidden_size"] = 16, ["intermediate_size"] = 40,
            ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["rope_theta"] = 500000,
            ["eos_token_id"] = new JsonArray(2, 7), ["bos_token_id"] = 1,
        };
        var fromCode = ModelConfig.FromJson(o);
        var fromText = ModelConfig.FromJson((JsonObject)JsonNode.Parse(o.ToJsonString())!);
        Assert.Equal(16, fromCode.HiddenSize);
        Assert.Equal(500000.0, fromCode.RopeTheta);
        Assert.Equal(new[] { 2, 7 }, fromCode.EosTokenIds);
        Assert.Equal(1, fromCode.BosTokenId);
        Assert.Equal(fromText.ToJson().ToJsonString(), fromCode.ToJson().ToJsonString());
    }

    [Fact]
    public void AbsurdSizesAreRefusedBeforeAllocation()
    {
        var o = (JsonObject)JsonNode.Parse("""{"model_type":"llama","vocab_size":32,"hidden_size":1000000000,"intermediate_size":40,"num_hidden_layers":2,"num_attention_heads":4}""")!;
        var e = Assert.Throws<FineAlignException>(() => ModelConfig.FromJson(o, "cfg.json"));
        Assert.Contains("hidden_size", e.Message);
        Assert.StartsWith("cfg.json", e.Message);
    }
}
