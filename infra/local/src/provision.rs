//! Creates on the emulator the resources `template.yaml` declares — tables with their keys
//! and TTL, the stream, the bus, the queues, the SES configuration set and sender identity —
//! and, for each `EventBridgeRule` event of a function, the rule with its pattern plus an SQS
//! queue as its target (the local stand-in for the Lambda target). Names come from the
//! template with `Stage` set to a per-run value, so runs never collide.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails, StreamStatus};
use serde_json::Value;

use crate::error::{sdk, LocalError};
use crate::template::{self, Context, EventSource, FunctionSpec, Names, Template};

/// Physical identity of one provisioned resource.
#[derive(Debug, Clone, Default)]
pub struct Physical {
    pub kind: String,
    pub name: String,
    pub arn: Option<String>,
    pub url: Option<String>,
}

/// A rule created for a function's `EventBridgeRule` event, delivering to `queue_url`.
#[derive(Debug, Clone)]
pub struct RuleBinding {
    pub function: String,
    pub event: String,
    pub bus: String,
    pub rule: String,
    pub queue_url: String,
    pub queue_arn: String,
}

#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            kinesis: aws_sdk_kinesis::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            sesv2: aws_sdk_sesv2::Client::new(config),
            s3: ember_aws::archive::s3_client(config),
        }
    }
}

/// Everything provisioned for one run.
pub struct Stack {
    pub template: Template,
    pub ctx: Context,
    pub physical: BTreeMap<String, Physical>,
    pub functions: Vec<FunctionSpec>,
    pub rules: Vec<RuleBinding>,
    pub clients: Clients,
}

/// The property holding a resource's physical name, by type.
fn name_property(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "AWS::DynamoDB::Table" => "TableName",
        "AWS::Kinesis::Stream" | "AWS::Events::EventBus" | "AWS::SES::ConfigurationSet" => "Name",
        "AWS::SQS::Queue" => "QueueName",
        "AWS::S3::Bucket" => "BucketName",
        "AWS::KinesisFirehose::DeliveryStream" => "DeliveryStreamName",
        "AWS::Serverless::Function" => "FunctionName",
        "AWS::Logs::LogGroup" => "LogGroupName",
        "AWS::SNS::Topic" => "TopicName",
        "AWS::CloudWatch::Alarm" => "AlarmName",
        "AWS::CloudWatch::Dashboard" => "DashboardName",
        _ => return None,
    })
}

impl Names for Stack {
    fn reference(&self, id: &str) -> Option<String> {
        if let Some(p) = self.physical.get(id) {
            // `!Ref` of a queue is its URL; of everything else modelled here, its name.
            return Some(if p.kind == "AWS::SQS::Queue" {
                p.url.clone().unwrap_or_else(|| p.name.clone())
            } else {
                p.name.clone()
            });
        }
        self.declared_name(id)
    }

    fn attribute(&self, id: &str, attr: &str) -> Option<String> {
        let p = self.physical.get(id);
        match attr {
            "Arn" => p.and_then(|p| p.arn.clone()),
            "Name" | "QueueName" | "StreamName" => {
                p.map(|p| p.name.clone()).or_else(|| self.declared_name(id))
            }
            "QueueUrl" => p.and_then(|p| p.url.clone()),
            _ => None,
        }
    }
}

impl Stack {
    /// The name a resource's name property resolves to (before or without creating it).
    fn declared_name(&self, id: &str) -> Option<String> {
        let r = self.template.resources.get(id)?;
        let prop = r.properties.get(name_property(&r.kind)?)?;
        template::resolve_string(prop, &self.ctx, self).ok()
    }

    pub fn name_of(&self, id: &str) -> Result<String, LocalError> {
        self.declared_name(id).ok_or_else(|| {
            LocalError::Template(format!(
                "resource {id} has no name property the runner can resolve"
            ))
        })
    }

    /// Provisions every supported resource of `template` and the local rule targets.
    pub async fn provision(
        template: Template,
        ctx: Context,
        config: &SdkConfig,
    ) -> Result<Stack, LocalError> {
        let functions = template.functions()?;
        let mut stack = Stack {
            template,
            ctx,
            physical: BTreeMap::new(),
            functions,
            rules: Vec::new(),
            clients: Clients::new(config),
        };
        let ids: Vec<(String, String)> = stack
            .template
            .resources
            .values()
            .map(|r| (r.logical_id.clone(), r.kind.clone()))
            .collect();
        for order in [
            "AWS::DynamoDB::Table",
            "AWS::Kinesis::Stream",
            "AWS::Events::EventBus",
            "AWS::SQS::Queue",
            "AWS::SES::ConfigurationSet",
            "AWS::S3::Bucket",
        ] {
            for (id, kind) in ids.iter().filter(|(_, k)| k == order) {
                let physical = match kind.as_str() {
                    "AWS::DynamoDB::Table" => stack.create_table(id).await?,
                    "AWS::Kinesis::Stream" => stack.create_stream(id).await?,
                    "AWS::Events::EventBus" => stack.create_bus(id).await?,
                    "AWS::SQS::Queue" => {
                        let name = stack.name_of(id)?;
                        stack.create_queue(&name).await?
                    }
                    "AWS::S3::Bucket" => stack.create_bucket(id).await?,
                    _ => stack.create_configuration_set(id).await?,
                };
                tracing::info!(resource = %id, name = %physical.name, "provisioned");
                stack.physical.insert(id.clone(), physical);
            }
        }
        stack.verify_sender().await?;
        stack.bind_rules().await?;
        Ok(stack)
    }

    fn props(&self, id: &str) -> Result<Value, LocalError> {
        let r = self.template.resource(id)?;
        template::resolve(&r.properties, &self.ctx, self)
    }

    async fn create_table(&self, id: &str) -> Result<Physical, LocalError> {
        let p = self.props(id)?;
        let name = self.name_of(id)?;
        let mut req = self
            .clients
            .dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for a in p
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let def = AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    a["AttributeType"].as_str().unwrap_or("S"),
                ))
                .build()
                .map_err(|e| LocalError::provision(id, e))?;
            req = req.attribute_definitions(def);
        }
        for k in p
            .get("KeySchema")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or("HASH")))
                .build()
                .map_err(|e| LocalError::provision(id, e))?;
            req = req.key_schema(key);
        }
        let out = req
            .send()
            .await
            .map_err(|e| LocalError::provision(id, sdk(e)))?;
        let arn = out
            .table_description()
            .and_then(|d| d.table_arn())
            .map(str::to_owned);
        if let Some(ttl) = p.get("TimeToLiveSpecification") {
            if ttl.get("Enabled").and_then(Value::as_bool) == Some(true) {
                let spec = TimeToLiveSpecification::builder()
                    .attribute_name(ttl["AttributeName"].as_str().unwrap_or_default())
                    .enabled(true)
                    .build()
                    .map_err(|e| LocalError::provision(id, e))?;
                self.clients
                    .dynamodb
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(spec)
                    .send()
                    .await
                    .map_err(|e| LocalError::provision(id, sdk(e)))?;
            }
        }
        Ok(Physical {
            kind: "AWS::DynamoDB::Table".into(),
            name,
            arn,
            url: None,
        })
    }

    async fn create_stream(&self, id: &str) -> Result<Physical, LocalError> {
        let p = self.props(id)?;
        let name = self.name_of(id)?;
        let mut req = self.clients.kinesis.create_stream().stream_name(&name);
        match p
            .pointer("/StreamModeDetails/StreamMode")
            .and_then(Value::as_str)
        {
            Some("ON_DEMAND") => {
                let mode = StreamModeDetails::builder()
                    .stream_mode(StreamMode::OnDemand)
                    .build()
                    .map_err(|e| LocalError::provision(id, e))?;
                req = req.stream_mode_details(mode);
            }
            _ => {
                let shards = p.get("ShardCount").and_then(Value::as_i64).unwrap_or(1);
                req = req.shard_count(i32::try_from(shards).unwrap_or(1));
            }
        }
        req.send()
            .await
            .map_err(|e| LocalError::provision(id, sdk(e)))?;
        let mut arn = None;
        for _ in 0..100 {
            let d = self
                .clients
                .kinesis
                .describe_stream_summary()
                .stream_name(&name)
                .send()
                .await
                .map_err(|e| LocalError::provision(id, sdk(e)))?;
            if let Some(s) = d.stream_description_summary() {
                if s.stream_status() == &StreamStatus::Active {
                    arn = Some(s.stream_arn().to_owned());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let arn = arn.ok_or_else(|| LocalError::provision(id, "stream did not become ACTIVE"))?;
        Ok(Physical {
            kind: "AWS::Kinesis::Stream".into(),
            name,
            arn: Some(arn),
            url: None,
        })
    }

    /// The archive bucket. Its encryption, lifecycle and access rules are AWS's business; the
    /// runner needs only the bucket (the objects expire with the run's resources).
    async fn create_bucket(&self, id: &str) -> Result<Physical, LocalError> {
        let name = self.name_of(id)?;
        self.clients
            .s3
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| LocalError::provision(id, sdk(e)))?;
        Ok(Physical {
            kind: "AWS::S3::Bucket".into(),
            arn: Some(format!("arn:aws:s3:::{name}")),
            name,
            url: None,
        })
    }

    async fn create_bus(&self, id: &str) -> Result<Physical, LocalError> {
        let name = self.name_of(id)?;
        let out = self
            .clients
            .events
            .create_event_bus()
            .name(&name)
            .send()
            .await
            .map_err(|e| LocalError::provision(id, sdk(e)))?;
        Ok(Physical {
            kind: "AWS::Events::EventBus".into(),
            name,
            arn: out.event_bus_arn().map(str::to_owned),
            url: None,
        })
    }

    /// Creates (or updates) rule `rule` on `bus` with `pattern`, and a new SQS queue
    /// `queue_name` as its target `target_id`: how the local run stands in for a Lambda
    /// target. Returns the queue.
    pub(crate) async fn rule_to_new_queue(
        &self,
        bus: &str,
        rule: &str,
        pattern: &str,
        queue_name: &str,
        target_id: &str,
    ) -> Result<Physical, LocalError> {
        self.clients
            .events
            .put_rule()
            .name(rule)
            .event_bus_name(bus)
            .event_pattern(pattern)
            .send()
            .await
            .map_err(|e| LocalError::provision(rule, sdk(e)))?;
        let queue = self.create_queue(queue_name).await?;
        let queue_arn = queue
            .arn
            .clone()
            .ok_or_else(|| LocalError::provision(rule, "target queue has no ARN"))?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id(target_id)
            .arn(&queue_arn)
            .build()
            .map_err(|e| LocalError::provision(rule, e))?;
        let out = self
            .clients
            .events
            .put_targets()
            .rule(rule)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .map_err(|e| LocalError::provision(rule, sdk(e)))?;
        if out.failed_entry_count() > 0 {
            return Err(LocalError::provision(
                rule,
                format!("PutTargets failed: {:?}", out.failed_entries()),
            ));
        }
        Ok(queue)
    }

    async fn create_queue(&self, name: &str) -> Result<Physical, LocalError> {
        let out = self
            .clients
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| LocalError::provision(name, sdk(e)))?;
        let url = out
            .queue_url()
            .ok_or_else(|| LocalError::provision(name, "CreateQueue returned no URL"))?
            .to_owned();
        let attrs = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| LocalError::provision(name, sdk(e)))?;
        let arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned();
        Ok(Physical {
            kind: "AWS::SQS::Queue".into(),
            name: name.to_owned(),
            arn,
            url: Some(url),
        })
    }

    async fn create_configuration_set(&self, id: &str) -> Result<Physical, LocalError> {
        let name = self.name_of(id)?;
        // Emulators differ in SESv2 configuration-set support; sending works without it, so a
        // refusal is logged, not fatal.
        if let Err(e) = self
            .clients
            .sesv2
            .create_configuration_set()
            .configuration_set_name(&name)
            .send()
            .await
        {
            tracing::warn!(resource = %id, error = %sdk(e), "configuration set not created on the emulator");
        }
        Ok(Physical {
            kind: "AWS::SES::ConfigurationSet".into(),
            name,
            arn: None,
            url: None,
        })
    }

    /// SES refuses to send from unverified identities: verify the sender address and the
    /// identity parameter (emulators verify immediately).
    async fn verify_sender(&self) -> Result<(), LocalError> {
        let mut identities = Vec::new();
        if let Some(sender) = self.ctx.parameters.get("SenderAddress") {
            identities.push(address_of(sender).to_owned());
        }
        if let Some(id) = self.ctx.parameters.get("SenderIdentity") {
            identities.push(id.clone());
        }
        for identity in identities {
            let r = self
                .clients
                .sesv2
                .create_email_identity()
                .email_identity(&identity)
                .send()
                .await;
            if let Err(e) = r {
                let text = sdk(e);
                if !text.contains("AlreadyExists") {
                    return Err(LocalError::provision(
                        format!("SES identity {identity}"),
                        text,
                    ));
                }
            }
        }
        Ok(())
    }

    /// For every `EventBridgeRule` event: a rule with the template's pattern on the template's
    /// bus, targeting a fresh SQS queue the local runner polls.
    async fn bind_rules(&mut self) -> Result<(), LocalError> {
        let stage = self
            .ctx
            .parameters
            .get("Stage")
            .cloned()
            .unwrap_or_else(|| "local".into());
        let mut bindings = Vec::new();
        for f in &self.functions {
            for ev in &f.events {
                let EventSource::EventBridgeRule { name, bus, pattern } = ev else {
                    continue;
                };
                let bus = match bus {
                    Some(b) => template::resolve_string(b, &self.ctx, self)?,
                    None => "default".to_owned(),
                };
                let pattern = template::resolve(pattern, &self.ctx, self)?;
                let rule = truncate(&format!("ember-{stage}-{}-{name}", f.logical_id), 64);
                let queue = self
                    .rule_to_new_queue(
                        &bus,
                        &rule,
                        &pattern.to_string(),
                        &truncate(&format!("{rule}-target"), 80),
                        "local-runner",
                    )
                    .await?;
                bindings.push(RuleBinding {
                    function: f.logical_id.clone(),
                    event: name.clone(),
                    bus,
                    rule,
                    queue_url: queue.url.clone().unwrap_or_default(),
                    queue_arn: queue.arn.clone().unwrap_or_default(),
                });
            }
        }
        self.rules = bindings;
        Ok(())
    }

    /// A function's environment with every intrinsic resolved.
    pub fn environment(&self, f: &FunctionSpec) -> Result<BTreeMap<String, String>, LocalError> {
        f.environment
            .iter()
            .map(|(k, v)| Ok((k.clone(), template::resolve_string(v, &self.ctx, self)?)))
            .collect()
    }

    /// Resolves a destination ARN expression (e.g. `!GetAtt Queue.Arn`) to a queue URL.
    pub fn queue_url_for(&self, destination: &Value) -> Result<String, LocalError> {
        let arn = template::resolve_string(destination, &self.ctx, self)?;
        self.physical
            .values()
            .find(|p| p.arn.as_deref() == Some(arn.as_str()) && p.url.is_some())
            .and_then(|p| p.url.clone())
            .ok_or_else(|| {
                LocalError::Template(format!("destination {arn} is not a provisioned queue"))
            })
    }

    /// Physical name of a stream given the event source's `Stream` expression (an ARN).
    pub fn stream_name_for(&self, stream: &Value) -> Result<String, LocalError> {
        let arn = template::resolve_string(stream, &self.ctx, self)?;
        self.physical
            .values()
            .find(|p| p.kind == "AWS::Kinesis::Stream" && p.arn.as_deref() == Some(arn.as_str()))
            .map(|p| p.name.clone())
            .ok_or_else(|| LocalError::Template(format!("stream {arn} is not provisioned")))
    }

    pub fn physical_of_kind<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Physical)> + 'a {
        self.physical.iter().filter(move |(_, p)| p.kind == kind)
    }

    /// Deletes what `provision` created (best effort: logs what could not be deleted).
    pub async fn teardown(&self) {
        for r in &self.rules {
            let _ = self
                .clients
                .events
                .remove_targets()
                .rule(&r.rule)
                .event_bus_name(&r.bus)
                .ids("local-runner")
                .send()
                .await;
            let _ = self
                .clients
                .events
                .delete_rule()
                .name(&r.rule)
                .event_bus_name(&r.bus)
                .send()
                .await;
            let _ = self
                .clients
                .sqs
                .delete_queue()
                .queue_url(&r.queue_url)
                .send()
                .await;
        }
        for (id, p) in &self.physical {
            let result = match p.kind.as_str() {
                "AWS::DynamoDB::Table" => self
                    .clients
                    .dynamodb
                    .delete_table()
                    .table_name(&p.name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk),
                "AWS::Kinesis::Stream" => self
                    .clients
                    .kinesis
                    .delete_stream()
                    .stream_name(&p.name)
                    .enforce_consumer_deletion(true)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk),
                "AWS::Events::EventBus" => self
                    .clients
                    .events
                    .delete_event_bus()
                    .name(&p.name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(sdk),
                "AWS::S3::Bucket" => self.empty_bucket(&p.name).await,
                "AWS::SQS::Queue" => match &p.url {
                    Some(u) => self
                        .clients
                        .sqs
                        .delete_queue()
                        .queue_url(u)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(sdk),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(resource = %id, error = %e, "could not delete");
            }
        }
    }
}

impl Stack {
    /// Deletes the objects of a bucket of this run. The empty bucket stays: moto keeps the
    /// objects it deleted among its tracked models, and once their bucket is gone its
    /// `/moto-api/data.json` (where sent mail is read) fails for every later caller.
    async fn empty_bucket(&self, bucket: &str) -> Result<(), String> {
        let listed = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .map_err(sdk)?;
        for o in listed.contents() {
            if let Some(key) = o.key() {
                let _ = self
                    .clients
                    .s3
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await;
            }
        }
        Ok(())
    }
}

/// `Name <addr@x>` -> `addr@x`.
pub fn address_of(sender: &str) -> &str {
    match (sender.find('<'), sender.rfind('>')) {
        (Some(a), Some(b)) if a < b => sender[a + 1..b].trim(),
        _ => sender.trim(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_address_is_extracted() {
        assert_eq!(address_of("Ember <hi@shop.example>"), "hi@shop.example");
        assert_eq!(address_of("hi@shop.example"), "hi@shop.example");
    }
}
