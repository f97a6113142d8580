"""A throw-away URLconf for the exception-handler tests."""

from django.core.exceptions import ValidationError
from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView


class EchoInputSerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=1)


class ServiceErrorView(APIView):
    def post(self, request):
        # as a service does after full_clean()
        raise ValidationError(
            {"cron": ["'61 * * * *' is not a valid cron expression."]}
        )


class PlainServiceErrorView(APIView):
    def post(self, request):
        raise ValidationError("The package is disabled.")


class EchoView(APIView):
    def post(self, request):
        data = EchoInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data)


urlpatterns = [
    path("service-error/", ServiceErrorView.as_view()),
    path("plain-error/", PlainServiceErrorView.as_view()),
    path("echo/", EchoView.as_view()),
]
